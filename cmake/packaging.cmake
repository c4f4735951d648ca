# Packaging: the pcopy(1) man page, shell completions, their install rules, and the Debian package
# (`cpack -G DEB` in the build directory). Included from the top-level CMakeLists.txt after the
# pcopy target and its install rule.

include(GNUInstallDirs)

# --- Man page ------------------------------------------------------------------------------------
# doc/pcopy.1.scd (scdoc(5) source) -> <build>/doc/pcopy.1.scd (version substituted at configure
# time) -> <build>/doc/pcopy.1 (scdoc, at build time) -> <build>/doc/pcopy.1.gz (installed).
find_program(PCOPY_SCDOC scdoc)
find_program(PCOPY_GZIP gzip)
if(NOT PCOPY_SCDOC)
  message(FATAL_ERROR "scdoc not found: it builds the pcopy(1) man page. Install the Debian package "
                      "'scdoc' (scripts/build.sh does it for you).")
endif()
if(NOT PCOPY_GZIP)
  message(FATAL_ERROR "gzip not found: it compresses the pcopy(1) man page.")
endif()

set(PCOPY_MAN_DIR ${CMAKE_CURRENT_BINARY_DIR}/doc)
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/doc/pcopy.1.scd ${PCOPY_MAN_DIR}/pcopy.1.scd @ONLY)

# A reproducible page: the date in its footer is the last commit's, not the build's.
execute_process(COMMAND git log -1 --format=%ct
                WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
                OUTPUT_VARIABLE PCOPY_SOURCE_DATE OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
set(PCOPY_SCDOC_ENV)
if(PCOPY_SOURCE_DATE MATCHES "^[0-9]+$")
  set(PCOPY_SCDOC_ENV SOURCE_DATE_EPOCH=${PCOPY_SOURCE_DATE})
endif()

add_custom_command(
  OUTPUT ${PCOPY_MAN_DIR}/pcopy.1 ${PCOPY_MAN_DIR}/pcopy.1.gz
  COMMAND ${CMAKE_COMMAND} -E env ${PCOPY_SCDOC_ENV}
          sh -c "\"$1\" < \"$2\" > \"$3.new\" && mv -f \"$3.new\" \"$3\"" sh
          ${PCOPY_SCDOC} ${PCOPY_MAN_DIR}/pcopy.1.scd ${PCOPY_MAN_DIR}/pcopy.1
  COMMAND sh -c "\"$1\" -9 -n -c \"$2\" > \"$2.gz.new\" && mv -f \"$2.gz.new\" \"$2.gz\"" sh
          ${PCOPY_GZIP} ${PCOPY_MAN_DIR}/pcopy.1
  DEPENDS ${PCOPY_MAN_DIR}/pcopy.1.scd
  COMMENT "Generating the pcopy(1) man page"
  VERBATIM)
add_custom_target(pcopy_man ALL DEPENDS ${PCOPY_MAN_DIR}/pcopy.1.gz)

install(FILES ${PCOPY_MAN_DIR}/pcopy.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# --- Shell completions ---------------------------------------------------------------------------
# Where bash-completion (loaded on demand by command name) and Debian's zsh look for them: zsh's
# fpath has /usr/share/zsh/vendor-completions for packages and /usr/local/share/zsh/site-functions
# for the rest, so which one follows the prefix given at install time (cpack installs into /usr).
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/completions/pcopy.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
        RENAME pcopy)
install(CODE "
  cmake_path(SET pcopy_prefix NORMALIZE \"\${CMAKE_INSTALL_PREFIX}/\")
  if(pcopy_prefix STREQUAL \"/usr/\")
    set(pcopy_zsh_dir \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions\")
  else()
    set(pcopy_zsh_dir \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}/zsh/site-functions\")
  endif()
  file(INSTALL DESTINATION \"\${pcopy_zsh_dir}\" TYPE FILE FILES \"${CMAKE_CURRENT_SOURCE_DIR}/completions/_pcopy\")
")

# --- License ------------------------------------------------------------------------------------
# share/doc/pcopy/copyright, where Debian policy puts a package's license.
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)
  install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME copyright)
endif()

# --- Debian package ------------------------------------------------------------------------------
# `cd build && cpack -G DEB` -> build/pcopy_<version>_<arch>.deb, installing under /usr.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pcopy)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "pcopy")
set(CPACK_PACKAGE_CONTACT "pcopy maintainers <maintainers@users.noreply.b-seed-436e2309.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "parallel directory copier with atomic, incremental copies")
set(CPACK_PACKAGE_DESCRIPTION
    "pcopy copies the contents of a directory tree into another with a pool of
worker processes. Every file appears under its final name only complete
(written under a temporary name, then renamed), so an interrupted or failed
copy never leaves partial files or destroys the previous version. It keeps
modes, times, symbolic links and sparse files, and optionally owners,
extended attributes, ACLs and hard links; re-runs can be incremental and can
mirror removals. It shows a live progress bar on a terminal and plain log
lines otherwise, and can write a JSON report and a manifest of what was
copied, for scripted backups and CI pipelines.")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_NAME pcopy)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
# Runtime Depends computed by dpkg-shlibdeps (package dpkg-dev) from the libraries pcopy links:
# libc6, libstdc++6, libgcc-s1, libfmt9, libxxhash0.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "bash-completion")
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)

include(CPack)
