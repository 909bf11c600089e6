# The ctest test install_consumer (cmake -P): installs the build in
# WEFT_BUILD_DIR into a scratch prefix, then builds and runs a tiny program
# against it twice, once with find_package(weft) (shared and static targets)
# and once with pkg-config.
#
# -D arguments: WEFT_BUILD_DIR, WORK_DIR, LIBDIR, C_COMPILER, GENERATOR,
# PKG_CONFIG (may be empty: that half is then skipped).

foreach(var WEFT_BUILD_DIR WORK_DIR LIBDIR C_COMPILER GENERATOR)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "install_consumer: -D${var}= is required")
    endif()
endforeach()

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        string(REPLACE ";" " " cmd "${ARGN}")
        message(FATAL_ERROR "install_consumer: failed (${rc}): ${cmd}")
    endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/src)

run(${CMAKE_COMMAND} --install ${WEFT_BUILD_DIR} --prefix ${prefix})

file(WRITE ${WORK_DIR}/src/main.c [=[
#include <weft.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    if (weft_version() != WEFT_VERSION_HEX ||
        strcmp(weft_version_string(), WEFT_VERSION_STRING) != 0)
        return 1;
    printf("consumer: weft %s\n", weft_version_string());
    return 0;
}
]=])
file(WRITE ${WORK_DIR}/src/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.18)
project(weft_consumer LANGUAGES C)
find_package(weft 0.1 REQUIRED)
add_executable(consumer_shared main.c)
target_link_libraries(consumer_shared PRIVATE weft::weft)
add_executable(consumer_static main.c)
target_link_libraries(consumer_static PRIVATE weft::weft_static)
]=])

# find_package(weft)
run(${CMAKE_COMMAND} -S ${WORK_DIR}/src -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer_shared)
run(${WORK_DIR}/build/consumer_static)

# pkg-config (the .pc file is relocatable, so the scratch prefix works)
if(PKG_CONFIG)
    set(pc_env PKG_CONFIG_PATH=${prefix}/${LIBDIR}/pkgconfig)
    execute_process(
        COMMAND ${CMAKE_COMMAND} -E env ${pc_env} ${PKG_CONFIG} --cflags --libs weft
        OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "install_consumer: pkg-config --cflags --libs weft failed")
    endif()
    separate_arguments(flags UNIX_COMMAND "${flags}")
    run(${C_COMPILER} ${WORK_DIR}/src/main.c ${flags} -o ${WORK_DIR}/consumer_pc)
    run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${prefix}/${LIBDIR}
        ${WORK_DIR}/consumer_pc)
    execute_process(
        COMMAND ${CMAKE_COMMAND} -E env ${pc_env} ${PKG_CONFIG} --static --libs weft
        OUTPUT_VARIABLE static_flags OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT static_flags MATCHES "-lpthread")
        message(FATAL_ERROR "install_consumer: pkg-config --static lacks -lpthread: ${static_flags}")
    endif()
else()
    message(STATUS "install_consumer: no pkg-config, skipped that half")
endif()
message(STATUS "install_consumer: ok")
