//! Entry points for the fuzz targets of `berth-fuzz` (crates/fuzz). Not a
//! stable API: it exposes the private tar entry decoder so that it can be
//! fuzzed without touching the file system.

use crate::tarstream::TarStream;
use crate::ApplyError;

/// Decodes every entry of the (uncompressed) tar stream `data` with the
/// decoder [`crate::apply_layer`] uses, reading and discarding each file's
/// data. Returns the number of entries, or the first error.
pub fn tar_entries(data: &[u8]) -> Result<usize, ApplyError> {
    let mut stream = TarStream::new(data);
    let mut n = 0;
    while let Some(entry) = stream.next_entry()? {
        let name = entry.display();
        stream.read_data(entry.size, &name, &mut |_| Ok(()))?;
        n += 1;
    }
    Ok(n)
}
