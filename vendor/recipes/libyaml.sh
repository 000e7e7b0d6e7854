# libyaml: the YAML event parser under the strict policy loader. The orig
# tarball has no ./configure, so CMake it is (no autoreconf needed).
build() {
    cmake_static -DBUILD_TESTING=OFF -DINSTALL_CMAKE_DIR=share/cmake
}
