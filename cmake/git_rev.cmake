# Run at every build (cmake -P): writes OUT, a header defining PCOPY_GIT_REV as the revision of the
# checkout in SRC_DIR ("-modified" after it where tracked files differ from it; "unknown" outside a
# git checkout), and rewrites it only when that changes, so --version names what was built, not
# what was there when cmake configured, and an unchanged revision recompiles nothing.
# Only a checkout of pcopy itself: sources unpacked inside another repository are not its revision.
execute_process(COMMAND git rev-parse --show-toplevel
                WORKING_DIRECTORY "${SRC_DIR}"
                OUTPUT_VARIABLE top OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
file(REAL_PATH "${SRC_DIR}" src_real)
if(top)
  file(REAL_PATH "${top}" top)
endif()
execute_process(COMMAND git rev-parse --short=12 HEAD
                WORKING_DIRECTORY "${SRC_DIR}"
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
if(failed OR NOT rev OR NOT top STREQUAL src_real)
  set(rev "unknown")
else()
  execute_process(COMMAND git diff --quiet HEAD --
                  WORKING_DIRECTORY "${SRC_DIR}" RESULT_VARIABLE differs ERROR_QUIET)
  if(differs EQUAL 1)
    string(APPEND rev "-modified")
  endif()
endif()
file(WRITE "${OUT}.new" "#define PCOPY_GIT_REV \"${rev}\"\n")
file(COPY_FILE "${OUT}.new" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.new")
