# pix stream: the PostgreSQL extension (PGXS) and the HTTP server, built from one Makefile.
#   make            build the extension, shim/pixd and collect/pix-collect
#   make install    the extension into the PostgreSQL found by pg_config, pixd and pix-collect into $(PREFIX)/bin
#   make run        install what is missing, start a private cluster and the server on 127.0.0.1:3000
#   make run-ha     the same on a pg_auto_failover formation: monitor, primary, synchronous standby
#   make test       every suite against a throw-away cluster; ends with "N passed, N failed"

EXTENSION = pix
MODULE_big = pix
OBJS = extension/pix.o extension/stream.o extension/claim.o extension/iteration_id.o \
       extension/auth.o extension/send.o extension/send_json.o \
       extension/message.o extension/validate.o extension/render.o extension/generate.o extension/insert.o extension/history.o \
       extension/statement.o
DATA = extension/pix--1.0.sql extension/pix--1.5.sql $(wildcard extension/pix--*--*.sql)

REGRESS = $(basename $(notdir $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)
ISOLATION = $(basename $(notdir $(wildcard specs/*.spec)))
ISOLATION_OPTS = --load-extension=$(EXTENSION) --load-extension=pix_isolation

# The rules below would otherwise make `install` the default goal: a bare `make` builds, nothing more.
.DEFAULT_GOAL := all


PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
            -Wno-missing-field-initializers -Iextension

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# ---- test helpers: never installed by `make install` ------------------------------------------
# The isolation specs' shared helpers are a test-only extension (schema t, whose t.reset() empties
# every pix table) in specs/. `make install` puts only the product on a server; the test targets
# install the helpers: `make install-test-helpers` (test/run-all.sh), and `make installcheck`, which
# copies them only when they are missing or older than specs/ (so it needs no write access otherwise).
TEST_HELPERS = specs/pix_isolation.control specs/pix_isolation--1.0.sql
TEST_HELPERS_INSTALLED = $(addprefix $(DESTDIR)$(datadir)/extension/,$(notdir $(TEST_HELPERS)))
install-test-helpers: $(TEST_HELPERS_INSTALLED)
$(DESTDIR)$(datadir)/extension/pix_isolation%: specs/pix_isolation%
	$(MKDIR_P) '$(DESTDIR)$(datadir)/extension'
	$(INSTALL_DATA) $< '$@'
installcheck: install-test-helpers
uninstall-test-helpers:
	rm -f $(addprefix ',$(addsuffix ',$(TEST_HELPERS_INSTALLED)))
.PHONY: install-test-helpers uninstall-test-helpers

# ---- the HTTP server -------------------------------------------------------------------------
SHIM_SRCS = $(wildcard shim/*.c shim/handlers/*.c)
SHIM_OBJS = $(SHIM_SRCS:.c=.o)
SHIM_CFLAGS = -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers -DH2O_USE_LIBUV=0 -Ishim -I$(shell $(PG_CONFIG) --includedir) \
              $(shell pkg-config --cflags libh2o-evloop openssl)
SHIM_LIBS = $(shell pkg-config --libs libh2o-evloop openssl) -L$(shell $(PG_CONFIG) --libdir) -lpq -lz -lm

all: shim/pixd

shim/%.o: shim/%.c $(wildcard shim/*.h)
	$(CC) $(SHIM_CFLAGS) $(SHIM_EXTRA_CFLAGS) -c -o $@ $<

shim/pixd: $(SHIM_OBJS)
	$(CC) $(SHIM_EXTRA_CFLAGS) -o $@ $^ $(SHIM_LIBS)

# GET /openapi.json serves openapi/openapi.json (the single source) compiled in: od turns it into a
# list of byte values that handlers/openapi.c #includes. Generated, git-ignored, rebuilt when the
# JSON changes.
shim/handlers/openapi.o: shim/handlers/openapi.json.inc
shim/handlers/openapi.json.inc: openapi/openapi.json
	od -An -v -tx1 $< | sed 's/[0-9a-f][0-9a-f]/0x&,/g' > $@.tmp && mv $@.tmp $@

clean: clean-shim
clean-shim:
	rm -f shim/pixd shim/*.o shim/handlers/*.o shim/handlers/openapi.json.inc

# Pure-C unit tests of the validators and the renderer (no database needed).
test/unit/test_validate: test/unit/test_validate.c extension/validate.c extension/render.c extension/validate.h extension/render.h
	$(CC) -Wall -Wextra -Werror -Iextension -o $@ $(filter %.c,$^)

clean: clean-unit
clean-unit:
	rm -f test/unit/test_validate

.PHONY: run run-ha test test-sharded clean-shim clean-unit
run:
	./scripts/run.sh

run-ha:
	PIX_HA=1 ./scripts/run.sh

test:
	./test/run-all.sh

# The whole end-to-end suite against routers with 4 shard databases each (docs/operations.md, "Sharding").
test-sharded:
	PIX_TEST_ONLY=e2e PIX_E2E_SHARDS=4 ./test/run-all.sh

# ---- pixbench: the end-to-end load generator (bench/pixbench/, see BENCHMARKS.md) -------------
PIXBENCH_SRCS = $(wildcard bench/pixbench/*.c)
PIXBENCH_CFLAGS = -std=gnu11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -I$(shell $(PG_CONFIG) --includedir)
PIXBENCH_LIBS = -L$(shell $(PG_CONFIG) --libdir) -lpq -lz -lm -lpthread -lssl -lcrypto

all: bench/pixbench/pixbench

bench/pixbench/pixbench: $(PIXBENCH_SRCS) bench/pixbench/pixbench.h
	$(CC) $(PIXBENCH_CFLAGS) -o $@ $(PIXBENCH_SRCS) $(PIXBENCH_LIBS)

clean: clean-pixbench
clean-pixbench:
	rm -f bench/pixbench/pixbench
.PHONY: clean-pixbench

# ---- pix-collect: the institution's side, a collector into PostgreSQL (collect/, docs/consuming.md) --
COLLECT_SRCS = $(wildcard collect/*.c)
COLLECT_CFLAGS = -std=gnu11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-missing-field-initializers \
                 -I$(shell $(PG_CONFIG) --includedir) $(shell pkg-config --cflags libcurl)
COLLECT_LIBS = $(shell pkg-config --libs libcurl) -L$(shell $(PG_CONFIG) --libdir) -lpq

all: collect/pix-collect

collect/pix-collect: $(COLLECT_SRCS) $(wildcard collect/*.h)
	$(CC) $(COLLECT_CFLAGS) -o $@ $(COLLECT_SRCS) $(COLLECT_LIBS)

clean: clean-collect
clean-collect:
	rm -f collect/pix-collect

# ---- the product's programs: `make install` puts pixd and pix-collect in $(PREFIX)/bin, on PATH --------
# (the extension's files go where pg_config says; nothing of the tests is installed anywhere)
PREFIX ?= /usr/local
install: install-programs
install-programs: shim/pixd collect/pix-collect
	$(MKDIR_P) '$(DESTDIR)$(PREFIX)/bin'
	$(INSTALL_PROGRAM) shim/pixd '$(DESTDIR)$(PREFIX)/bin/pixd'
	$(INSTALL_PROGRAM) collect/pix-collect '$(DESTDIR)$(PREFIX)/bin/pix-collect'
uninstall: uninstall-programs
uninstall-programs:
	rm -f '$(DESTDIR)$(PREFIX)/bin/pixd' '$(DESTDIR)$(PREFIX)/bin/pix-collect'
.PHONY: install-programs uninstall-programs clean-collect

# ---- reliability: fuzzing, fault injection, security (test/fuzz, test/fault, test/security) ------
#   make fuzz [FUZZ_SECONDS=20]   libFuzzer harnesses, FUZZ_SECONDS each (clang; ~1.5 min at 20)
#   make test-security            least-privilege role, id entropy, limits, configuration (~40 s)
#   make test-fault               fault scenarios under a drain, then HA; rewrites RELIABILITY.md (~15 min)
FUZZ_SECONDS ?= 20
.PHONY: fuzz test-security test-fault
fuzz:
	./test/fuzz/run.sh $(FUZZ_SECONDS)
test-security:
	./test/security/run.sh
test-fault:
	./test/fault/run.sh
