# http-parser: the HTTP/1.1 request parser in the proxy, in strict mode
# (rejects lenient whitespace and header forms that enable smuggling).
build() {
    $CC $DEP_CFLAGS $DEP_CPPFLAGS -DHTTP_PARSER_STRICT=1 -c http_parser.c -o http_parser.o
    ar rcs libhttp_parser.a http_parser.o
    mkdir -p "$PREFIX/lib" "$PREFIX/include"
    cp libhttp_parser.a "$PREFIX/lib/"
    cp http_parser.h "$PREFIX/include/"
}
