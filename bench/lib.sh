# Helpers shared by the bench/*.sh scripts; sourced by them, not run.

# need_tools TOOL...: exits with a message naming the calling script and
# scripts/install-test-deps unless every TOOL is on PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "bench/$(basename "$0") needs $tool: run scripts/install-test-deps" >&2
            exit 1
        }
    done
}
