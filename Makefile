# Convenience wrapper around CMake; every configuration lives in its own
# directory under build/. `make help` lists the targets.
#
# Variables:
#   WERROR=1          warnings are errors (-DWEFT_WERROR=ON), as in CI
#   JOBS=N            parallel compile jobs (default: nproc)
#   CTEST_JOBS=N      parallel test processes (default: 2)
#   CTEST_ARGS=...    extra ctest arguments, e.g. CTEST_ARGS='-R test_chan'
#   CMAKE_ARGS=...    extra cmake -D arguments for the configure step
#   WEFT_TEST_TIMEOUT=N  seconds per test case (defaults below per flavor)

CMAKE ?= cmake
CTEST ?= ctest
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_JOBS ?= 2
CTEST_ARGS ?=
CMAKE_ARGS ?=
CLANG_FORMAT ?= clang-format

MAKEFLAGS += --no-print-directory

ifeq ($(WERROR),1)
WERROR_ARG := -DWEFT_WERROR=ON
else
WERROR_ARG := -DWEFT_WERROR=OFF
endif

# Sanitizer and emulator builds: optimised a little, for usable speed with
# accurate stacks; Debug build type so that debug-only checks run too.
SAN_FLAGS := -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG='-O1 -g' \
	-DCMAKE_CXX_FLAGS_DEBUG='-O1 -g' -DCMAKE_ASM_FLAGS_DEBUG='-O1 -g'
RELEASE_FLAGS := -DCMAKE_BUILD_TYPE=Release

timeout_arg = -DWEFT_TEST_TIMEOUT=$(or $(WEFT_TEST_TIMEOUT),$(1))

# $(call build,<dir>,<cmake args>[,<target>])
define build
	$(CMAKE) -S . -B $(BUILD)/$(1) $(2) $(WERROR_ARG) $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD)/$(1) -j$(JOBS) $(if $(3),--target $(3))
endef

# $(call ctest,<dir>[,<environment assignments>])
define ctest
	cd $(BUILD)/$(1) && $(2) $(CTEST) --output-on-failure -j$(CTEST_JOBS) $(CTEST_ARGS)
endef

ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

.PHONY: all build run test test-asan test-tsan test-portable test-aarch64 \
	test-valgrind bench format format-check clean help

all: build

build:
	$(call build,release,$(RELEASE_FLAGS) $(call timeout_arg,120))

run: build
	./$(BUILD)/release/examples/pizza

test: build
	$(call ctest,release)

test-asan:
	$(call build,asan,$(SAN_FLAGS) -DWEFT_SANITIZE=address $(call timeout_arg,300))
	$(call ctest,asan,$(ASAN_ENV))

test-tsan:
	$(call build,tsan,$(SAN_FLAGS) -DWEFT_SANITIZE=thread $(call timeout_arg,300))
	$(call ctest,tsan,$(TSAN_ENV))

test-portable:
	$(call build,portable,$(RELEASE_FLAGS) -DWEFT_PORTABLE_SWITCH=ON $(call timeout_arg,120))
	$(call ctest,portable)

test-aarch64:
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null || \
	  { echo "test-aarch64 needs gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu," \
	         "libc6-dev-arm64-cross and qemu-user"; exit 1; }
	$(call build,aarch64,$(RELEASE_FLAGS) \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/aarch64-linux-gnu.cmake $(call timeout_arg,600))
	$(call ctest,aarch64)

# Not part of CI: the whole suite under memcheck (slow).
test-valgrind:
	$(call build,valgrind,$(SAN_FLAGS) $(call timeout_arg,600) \
	  '-DWEFT_TEST_WRAPPER=valgrind;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite')
	$(call ctest,valgrind)

bench:
	$(call build,release,$(RELEASE_FLAGS) $(call timeout_arg,120),weft-bench)
	@echo "built $(BUILD)/release/bench/weft-bench"

FORMAT_FILES = $(shell find src include test bench examples \
	\( -name '*.c' -o -name '*.h' -o -name '*.cpp' \) -type f 2>/dev/null)

format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)

help:
	@echo "make / make build   release build (-O2 -g) in $(BUILD)/release"
	@echo "make run            build and run the demo, examples/pizza"
	@echo "make test           release build, then ctest"
	@echo "make test-asan      ASan+UBSan build in $(BUILD)/asan, then ctest"
	@echo "make test-tsan      TSan build in $(BUILD)/tsan, then ctest"
	@echo "make test-portable  ucontext switch instead of assembly, then ctest"
	@echo "make test-aarch64   cross build for aarch64, ctest under qemu-aarch64"
	@echo "make test-valgrind  ctest under valgrind memcheck (slow, not in CI)"
	@echo "make bench          build $(BUILD)/release/bench/weft-bench"
	@echo "make format         clang-format -i the sources (format-check: dry run)"
	@echo "make clean          remove $(BUILD)/"
	@echo "WERROR=1 makes warnings errors; CTEST_ARGS='-R name' picks tests"
