# Shared by every recipe (sourced before it). Recipes run in the unpacked
# source tree with PREFIX, CC, JOBS and KINC set, and define build().
#
# Libraries are built for size and for --gc-sections: no debug info, one
# section per function. Host (glibc) builds used by the unit tests get the
# same flags so both builds exercise the same configuration.
DEP_CFLAGS="-O2 -ffunction-sections -fdata-sections -fPIC -D_FORTIFY_SOURCE=0"
case "$CC" in
musl-gcc) DEP_CPPFLAGS="-idirafter $KINC" ;;
*) DEP_CPPFLAGS="" ;;
esac

# cmake_static [ARGS...]: configure, build and install a CMake project.
cmake_static() {
    cmake -S . -B _build -G "Unix Makefiles" \
        -DCMAKE_C_COMPILER="$CC" \
        -DCMAKE_C_FLAGS="$DEP_CFLAGS $DEP_CPPFLAGS" \
        -DCMAKE_BUILD_TYPE=None \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" \
        -DCMAKE_INSTALL_LIBDIR=lib \
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
        -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON \
        -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON \
        "$@"
    cmake --build _build -j "$JOBS"
    cmake --install _build
}
