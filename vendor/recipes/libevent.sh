# libevent 2.1: the event loop, bufferevents, timers, signals and evdns.
# TLS is ours (mbedTLS glue in src/tls.c), so libevent's OpenSSL layer is off.
build() {
    cmake_static -DEVENT__LIBRARY_TYPE=STATIC -DEVENT__DISABLE_OPENSSL=ON \
        -DEVENT__DISABLE_MBEDTLS=ON -DEVENT__DISABLE_TESTS=ON \
        -DEVENT__DISABLE_REGRESS=ON -DEVENT__DISABLE_SAMPLES=ON \
        -DEVENT__DISABLE_BENCHMARK=ON -DEVENT__DISABLE_DEBUG_MODE=ON
}
