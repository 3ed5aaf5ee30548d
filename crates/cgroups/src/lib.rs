//! cgroup v1, v2 and hybrid managers behind one trait.
