# slm - build, demo and tests.
#   make                  ./slm, ./slm-convert and every other examples/NAME.c as ./NAME
#   make demo             fetch stories260K, convert it, print a story
#   make test             fast suite (< 5 min, installs nothing)
#   make test-extended    sanitizers and slow checks (may apt-get install)
#   make fuzz             each fuzz target (tests/fuzz/) under libFuzzer for FUZZ_SECONDS
#   make fuzz-replay      the fuzz seed corpora through the replay programs (any compiler)
#   make ARCH=            portable build (no -march=native)
#   make OPENMP=          build without -fopenmp (slm.h runs its own thread pool either way)
#   make dist             dist/slm and dist/slm-convert for any x86-64 CPU: -march=x86-64 and
#                         -DSLM_DISPATCH (kernels for AVX2 and AVX-512 too, chosen at run time);
#                         on aarch64 -march=armv8-a (NEON with and without the dot product)

CC ?= cc
CXX ?= c++

# -march=native when the compiler takes it; `make ARCH=` for a portable build.
ifeq ($(origin ARCH),undefined)
ARCH := $(shell $(CC) -march=native -E -x c /dev/null >/dev/null 2>&1 && echo -march=native)
endif
# -fopenmp when the compiler (and its runtime) can build and link with it, as
# many apps build: slm.h still runs its own thread pool (its waits are its own;
# THREADS at the top of slm.h says why) unless CFLAGS has -DSLM_USE_OPENMP, and
# the tests built this way check that.
ifeq ($(origin OPENMP),undefined)
OPENMP := $(shell printf 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null >/dev/null 2>&1 && echo -fopenmp)
endif

CFLAGS ?= -O2 -g $(ARCH)
WARNINGS = -Wall -Wextra
LDLIBS = -lm -lpthread

SLM_MODELS ?= ../shared/models
export SLM_MODELS

# examples/slm.c is the CLI, ./slm; each other examples/NAME.c is ./NAME
# (tests/run.sh runs every one of them).
EXAMPLES := $(filter-out slm,$(basename $(notdir $(wildcard examples/*.c))))

FUZZ_SECONDS ?= 60

.PHONY: all demo test test-extended fuzz fuzz-replay clean dist

all: slm slm-convert $(EXAMPLES)

slm: examples/slm.c examples/term.h slm.h
	$(CC) $(CFLAGS) $(WARNINGS) $(OPENMP) -I. -o $@ examples/slm.c $(LDFLAGS) $(LDLIBS)

$(EXAMPLES): %: examples/%.c examples/term.h slm.h
	$(CC) $(CFLAGS) $(WARNINGS) $(OPENMP) -I. -o $@ $< $(LDFLAGS) $(LDLIBS)

# the converter: the command line (holding slm.h's implementation), one
# reader per input format, the JSON reader and the writer
CONVERT_SRC = tools/slm-convert.c tools/convert.c tools/read_llama2c.c tools/read_gguf.c tools/read_hf.c \
              tools/json.c tools/lora.c tools/write_slm.c
CONVERT_HDR = tools/convert.h tools/json.h

slm-convert: $(CONVERT_SRC) $(CONVERT_HDR) slm.h
	$(CC) $(CFLAGS) $(WARNINGS) $(OPENMP) -I. -o $@ $(CONVERT_SRC) $(LDFLAGS) $(LDLIBS)

# portable binaries: the baseline flags of x86-64 or aarch64, every kernel
# set compiled in (SLM_DISPATCH in slm.h), the best one for the CPU chosen at
# load; elsewhere SLM_DISPATCH changes nothing and these are the ARCH= build
DIST_ARCH_x86_64 := -march=x86-64
DIST_ARCH_amd64 := -march=x86-64
DIST_ARCH_aarch64 := -march=armv8-a
DIST_ARCH_arm64 := -march=armv8-a
DIST_CFLAGS ?= -O2 -g $(DIST_ARCH_$(shell uname -m)) -DSLM_DISPATCH
dist: dist/slm dist/slm-convert

dist/slm: examples/slm.c examples/term.h slm.h
	@mkdir -p dist
	$(CC) $(DIST_CFLAGS) $(WARNINGS) $(OPENMP) -I. -o $@ examples/slm.c $(LDFLAGS) $(LDLIBS)

dist/slm-convert: $(CONVERT_SRC) $(CONVERT_HDR) slm.h
	@mkdir -p dist
	$(CC) $(DIST_CFLAGS) $(WARNINGS) $(OPENMP) -I. -o $@ $(CONVERT_SRC) $(LDFLAGS) $(LDLIBS)

models/stories260K.slm: | slm-convert
	tools/fetch-stories260K.sh models
	./slm-convert --type f32 models/stories260K.bin models/tok512.bin $@

demo: all models/stories260K.slm
	./slm run -m models/stories260K.slm -p "Once upon a time" -n 200
	@echo

# The suites report a failed build as a failed test and still end with their
# "N passed, N failed" line.
test:
	@$(MAKE) --no-print-directory all; \
	SLM_BUILD_STATUS=$$? CC="$(CC)" CXX="$(CXX)" CFLAGS="$(CFLAGS)" OPENMP="$(OPENMP)" tests/run.sh

test-extended:
	@$(MAKE) --no-print-directory all; \
	SLM_BUILD_STATUS=$$? CC="$(CC)" CXX="$(CXX)" CFLAGS="$(CFLAGS)" OPENMP="$(OPENMP)" \
	CONVERT_SRC="$(CONVERT_SRC)" tests/extended.sh

# The tokenizer and chat targets read the vocabularies make test converts into build/.
fuzz:
	CC="$(CC)" tests/fuzz/run.sh fuzz $(FUZZ_SECONDS)

fuzz-replay:
	CC="$(CC)" tests/fuzz/run.sh replay

clean:
	rm -rf slm slm-convert $(EXAMPLES) build dist
