# SQLite 3: gateway state. Debian's source package is the full tree without
# the amalgamation, so sqlite3.c is generated first (tclsh and a host compiler,
# BCC, run the generators). The library is built through libtool so that
# configure's feature checks (usleep, fdatasync, localtime_r) apply.
build() {
    mkdir -p _build
    cd _build
    ../configure CC="$CC" BCC=gcc CFLAGS="$DEP_CFLAGS -DSQLITE_DQS=0 -DSQLITE_OMIT_LOAD_EXTENSION \
-DSQLITE_DEFAULT_FOREIGN_KEYS=1 -DSQLITE_OMIT_DEPRECATED" CPPFLAGS="$DEP_CPPFLAGS" \
        --prefix="$PREFIX" --disable-shared --enable-static --disable-tcl --disable-readline \
        --disable-load-extension --disable-math
    make -j "$JOBS" sqlite3.c
    make -j "$JOBS" libsqlite3.la
    mkdir -p "$PREFIX/lib" "$PREFIX/include"
    cp .libs/libsqlite3.a "$PREFIX/lib/"
    cp sqlite3.h ../src/sqlite3ext.h "$PREFIX/include/"
}
