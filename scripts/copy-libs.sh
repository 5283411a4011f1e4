# Sourced by the scripts that build images with `docker import` from this host's binaries.

# Copies the shared libraries files load into $1, keeping their paths.
copy_libs() {
    local dest=$1; shift
    for file in "$@"; do
        # A file that loads none (static, or a plain library) leaves grep with nothing.
        ldd "$file" 2>/dev/null | { grep -o '/[^ ]*' || true; } | while read -r lib; do
            mkdir -p "$dest$(dirname "$lib")"
            cp -L "$lib" "$dest$lib"
        done
    done
}

# Copies files and the shared libraries they load into $1, keeping their paths.
copy_with_libs() {
    local dest=$1; shift
    for file in "$@"; do
        mkdir -p "$dest$(dirname "$file")"
        cp -L "$file" "$dest$file"
    done
    copy_libs "$dest" "$@"
}
