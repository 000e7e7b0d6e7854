# libseccomp: the agent's syscall filter. Needs the kernel UAPI headers
# (KINC, after musl's own) and gperf; only src/ is built (no tools or tests).
build() {
    ./configure CC="$CC" CFLAGS="$DEP_CFLAGS" CPPFLAGS="$DEP_CPPFLAGS" --prefix="$PREFIX" \
        --disable-shared --enable-static --disable-python --disable-dependency-tracking
    make -j "$JOBS" -C src
    make -C include install
    make -C src install
    make install-pkgconfDATA
}
