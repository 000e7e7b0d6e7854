# openshell: one static musl binary. Plain GNU make.
#
#   make                 dependencies (first run), build/openshell, build/bin/ symlinks
#   make demo            all of the above, then the main job on the embedded defaults
#   make check           build, then run every test (unit under ASan/UBSan, e2e)
#   make unit|e2e T=pat  run only unit or e2e tests (whose name contains pat)
#   make install         PREFIX=/usr/local (and DESTDIR) binary plus applet symlinks
#   make vendor-tarball  the dependency sources in one tarball, for air-gapped hosts
#                        (build there with: make VENDOR_TARBALL=path/to/tarball)
#   make fmt             clang-format every source file in place
#   make clean           our objects and binaries (dependencies kept)
#   make distclean       everything under build/, dependencies included
#
# Warnings are errors when CI=true (or WERROR=1).

VERSION := 0.1.0
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
# B is where our objects and binaries go; parallel work trees may use their own
# B while sharing the (expensive) dependency prefixes.
B ?= build
DEPS_PREFIX ?= build/deps
HOST_DEPS_PREFIX ?= build/deps-host
DEP_NAMES := $(shell awk '!/^\#/ && NF { print $$1 }' vendor/deps.list)
APPLET_LINKS := openshell-gateway openshell-proxy openshell-supervisor

CC := musl-gcc
HOSTCC := gcc
export VENDOR_TARBALL

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wvla -Wundef -Wimplicit-fallthrough -Wno-missing-field-initializers
ifneq ($(filter true 1,$(CI) $(WERROR)),)
WARN += -Werror
endif
BASE_CFLAGS := -std=gnu11 -g -O2 $(WARN) -fstack-protector-strong -ffunction-sections \
	-fdata-sections -Iinclude -I$(B)/gen -D_GNU_SOURCE
CFLAGS := $(BASE_CFLAGS) -I$(DEPS_PREFIX)/include -idirafter $(DEPS_PREFIX)/kinc
LDFLAGS := -static -Wl,--gc-sections -Wl,-z,noexecstack
# Order matters for static archives: users before providers.
LIBS := -lnghttp2 -lmbedtls -lmbedx509 -lmbedcrypto -levent_extra -levent_core -lcjson \
	-lseccomp -lyaml -lsqlite3 -lhttp_parser

SRC := $(sort $(wildcard src/*.c src/*/*.c))
APPLET_SRC := $(sort $(wildcard applets/*.c applets/*/*.c))
OBJ := $(SRC:%.c=$(B)/obj/%.o) $(APPLET_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/notices.o

# Unit tests: host toolchain with AddressSanitizer and UBSan, against a glibc
# build of the same dependency recipe ($(HOST_DEPS_PREFIX)).
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
HOST_CFLAGS := $(BASE_CFLAGS) -O1 $(SAN) -I$(HOST_DEPS_PREFIX)/include -Itest/unit
HOST_OBJ := $(SRC:%.c=$(B)/obj-host/%.o)
UNIT_SRC := $(sort $(wildcard test/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:test/unit/%.c=$(B)/test/unit/%)
HELPER_SRC := $(sort $(wildcard test/helpers/*.c))
HELPER_BIN := $(HELPER_SRC:test/helpers/%.c=$(B)/test/helpers/%)

.PHONY: all static check unit e2e install uninstall clean distclean fmt fmt-check \
	vendor-tarball deps test-tools demo
.DELETE_ON_ERROR:
# Objects built only as prerequisites (host unit-test objects) are kept.
.SECONDARY: $(HOST_OBJ)

all: $(B)/openshell $(addprefix $(B)/bin/,openshell $(APPLET_LINKS))
static: all

# ------------------------------------------------------------------ dependencies

build/.tools: vendor/vendor.sh
	@mkdir -p build
	@vendor/vendor.sh tools
	@touch $@

# One stamp for the whole prefix; vendor.sh keeps a key per library and
# rebuilds only libraries whose recipe, source or line in deps.list changed.
$(DEPS_PREFIX)/.built: build/.tools vendor/vendor.sh vendor/deps.list $(wildcard vendor/recipes/*.sh)
	@for n in $(DEP_NAMES); do vendor/vendor.sh build $(DEPS_PREFIX) musl-gcc $$n || exit 1; done
	@touch $@

$(HOST_DEPS_PREFIX)/.built: build/.tools vendor/vendor.sh vendor/deps.list $(wildcard vendor/recipes/*.sh)
	@for n in $(DEP_NAMES); do vendor/vendor.sh build $(HOST_DEPS_PREFIX) gcc $$n || exit 1; done
	@touch $@

deps: $(DEPS_PREFIX)/.built

vendor-tarball: build/.tools
	@vendor/vendor.sh tarball $(B)/openshell-vendor-src.tar

# ------------------------------------------------------------------ generated

GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
$(B)/gen/version.h: FORCE
	@mkdir -p $(@D)
	@printf '#define OPENSHELL_VERSION "%s%s"\n' '$(VERSION)' '$(if $(GIT_REV), (git $(GIT_REV)))' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

$(B)/gen/deps.h: $(DEPS_PREFIX)/.built
	@mkdir -p $(@D)
	@{ echo '/* Generated from build/deps/versions: the libraries linked in. */'; \
	  echo '#define DEPS_TABLE \'; \
	  for n in $(DEP_NAMES); do \
	    set -- $$(cat $(DEPS_PREFIX)/versions/$$n); \
	    printf '    DEP("%s", "%s", "%s", "%s") \\\n' "$$1" "$$2" "$$3" "$$4"; \
	  done; echo; \
	  printf '#define DEPS_MUSL_VERSION "%s"\n' "$$(dpkg-query -W -f '$${Version}' musl-dev)"; \
	} >$@

# The notices the binary carries: COPYING, then each library's own license.
$(B)/gen/notices.txt: COPYING $(DEPS_PREFIX)/.built
	@mkdir -p $(@D)
	@{ cat COPYING; \
	  for n in $(DEP_NAMES); do \
	    printf '\n\n==== %s (%s) ====\n\n' "$$n" "$$(cut -d' ' -f2,3 $(DEPS_PREFIX)/versions/$$n)"; \
	    cat $(DEPS_PREFIX)/licenses/$$n; done; \
	  printf '\n\n==== musl (%s) ====\n\n' "$$(dpkg-query -W -f '$${Version}' musl-dev)"; \
	  cat /usr/share/doc/musl-dev/copyright; } >$@

$(B)/gen/notices.c: $(B)/gen/notices.txt
	@awk 'BEGIN { print "const char gen_notices[] ="; } \
	  { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, ""); \
	    printf "    \"%s\\n\"\n", $$0 } END { print "    \"\";" }' $< >$@

# ------------------------------------------------------------------ the binary

$(B)/obj/%.o: %.c $(DEPS_PREFIX)/.built | $(B)/gen/version.h $(B)/gen/deps.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/gen/notices.o: $(B)/gen/notices.c
	@mkdir -p $(@D)
	$(CC) -O2 -c $< -o $@

$(B)/openshell.debug: $(OBJ)
	$(CC) $(LDFLAGS) -Wl,-Map=$(B)/openshell.map -o $@ $(OBJ) -L$(DEPS_PREFIX)/lib $(LIBS)

$(B)/openshell: $(B)/openshell.debug
	strip -o $@ $<

$(B)/bin/openshell: $(B)/openshell
	@mkdir -p $(@D)
	@ln -sf ../openshell $@

$(addprefix $(B)/bin/,$(APPLET_LINKS)): $(B)/bin/openshell
	@ln -sf openshell $@

# ------------------------------------------------------------------ tests

$(B)/obj-host/%.o: %.c $(HOST_DEPS_PREFIX)/.built | $(B)/gen/version.h
	@mkdir -p $(@D)
	$(HOSTCC) $(HOST_CFLAGS) -MMD -MP -c $< -o $@

$(B)/test/unit/%: test/unit/%.c test/unit/tap.h $(HOST_OBJ)
	@mkdir -p $(@D)
	$(HOSTCC) $(HOST_CFLAGS) -o $@ $< $(HOST_OBJ) -L$(HOST_DEPS_PREFIX)/lib $(LIBS) -lpthread -lm

# Helpers run inside sandboxes, so they are static musl programs like openshell.
$(B)/test/helpers/%: test/helpers/%.c $(DEPS_PREFIX)/.built
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -static -o $@ $< -L$(DEPS_PREFIX)/lib $(LIBS)

test-tools: build/.tools
	@vendor/vendor.sh tools test

check: all $(UNIT_BIN) $(HELPER_BIN) test-tools
	@B=$(B) sh test/run.sh

unit: $(UNIT_BIN)
	@B=$(B) sh test/run.sh unit $(T)

e2e: all $(HELPER_BIN) test-tools
	@B=$(B) sh test/run.sh e2e $(T)

# ------------------------------------------------------------------ the main job

# The README's first command: set everything up, then run the main job on the
# embedded defaults (doc/demo.sh says what it shows).
demo: all
	@sh doc/demo.sh

# ------------------------------------------------------------------ install, fmt, clean

install: all
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(B)/openshell $(DESTDIR)$(BINDIR)/openshell
	for l in $(APPLET_LINKS); do ln -sf openshell $(DESTDIR)$(BINDIR)/$$l; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/openshell $(addprefix $(DESTDIR)$(BINDIR)/,$(APPLET_LINKS))

FMT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null | grep -v '\.def$$')
fmt:
	clang-format -i $(FMT_FILES)

fmt-check:
	clang-format --dry-run -Werror $(FMT_FILES)

clean:
	rm -rf $(B)/obj $(B)/obj-host $(B)/gen $(B)/test $(B)/bin $(B)/openshell $(B)/openshell.debug \
		$(B)/openshell.map

distclean:
	rm -rf $(B)

FORCE:

-include $(shell find $(B)/obj $(B)/obj-host -name '*.d' 2>/dev/null)

# ------------------------------------------------------------------ fuzzing (policy)
# make fuzz: libFuzzer targets (clang, ASan, UBSan) for the policy loader and the
# decision-request reader, in $(B)/fuzz/. Run one with its corpus, e.g.
#   $(B)/fuzz/fuzz_policy_load -max_total_time=600 $(B)/fuzz/work-load test/fuzz/corpus_load
# CI never runs the fuzzer: test/unit/test_policy_corpus.c replays the kept corpus.
FUZZ_CC := clang
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
	-Iinclude -I$(HOST_DEPS_PREFIX)/include -D_GNU_SOURCE
FUZZ_LIBSRC := $(sort $(wildcard src/policy/*.c)) src/buf.c src/err.c src/xfuncs.c src/log.c
FUZZ_BIN := $(patsubst test/fuzz/%.c,$(B)/fuzz/%,$(wildcard test/fuzz/fuzz_*.c))

.PHONY: fuzz
fuzz: $(FUZZ_BIN)

$(B)/fuzz/%: test/fuzz/%.c test/fuzz/fuzz_policy.h $(FUZZ_LIBSRC) $(wildcard src/policy/*.h) \
		include/policy.h $(HOST_DEPS_PREFIX)/.built
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIBSRC) -L$(HOST_DEPS_PREFIX)/lib -lyaml -lcjson -lm
# ------------------------------------------------------------------ end of fuzzing (policy)
