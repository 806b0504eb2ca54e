# packaging/install.cmake - included by the top-level CMakeLists.txt after
# the binaries' install rules: the service files, the man pages, and CPack's
# .deb. Configure with -DCMAKE_INSTALL_PREFIX=/usr for a system install (then
# the configuration files go to /etc, as GNUInstallDirs does for /usr).

set(SANDBOX_AGENT_PKG_DIR ${CMAKE_CURRENT_LIST_DIR})
set(SANDBOX_AGENT_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/packaging)

option(SANDBOX_AGENT_INSTALL_OPENRC "Install the OpenRC init script (etc/init.d, etc/conf.d)" ON)

# The unit and the init script name the binary's and the settings' paths,
# which depend on the prefix given at install time (cmake --install --prefix,
# or CPack's /usr): they are configured then, by install-config.cmake.
#   systemd: PREFIX/lib/systemd/system/sandbox-agent.service and
#            /etc/default/sandbox-agent (PREFIX/etc/... unless PREFIX is /usr)
#   OpenRC:  /etc/init.d/sandbox-agent and /etc/conf.d/sandbox-agent
#            (not in the .deb: Debian's init.d is sysvinit's)
install(CODE "set(SA_SRC \"${SANDBOX_AGENT_PKG_DIR}\")
set(SA_GEN \"${SANDBOX_AGENT_GEN_DIR}\")
set(SA_PART service)
include(\"${SANDBOX_AGENT_PKG_DIR}/install-config.cmake\")" COMPONENT service)
if(SANDBOX_AGENT_INSTALL_OPENRC)
  install(CODE "set(SA_SRC \"${SANDBOX_AGENT_PKG_DIR}\")
set(SA_GEN \"${SANDBOX_AGENT_GEN_DIR}\")
set(SA_PART openrc)
include(\"${SANDBOX_AGENT_PKG_DIR}/install-config.cmake\")" COMPONENT openrc)
endif()

set(SANDBOX_AGENT_MAINTAINER "sandbox-agent maintainers <maintainers@sandbox-agent.example>"
    CACHE STRING "The .deb's Maintainer (and its changelog's and copyright's contact)")

# Man pages and the package's documents, gzipped as Debian wants them (-n:
# no name or time in the header, so the bytes depend only on the text).
find_program(SANDBOX_AGENT_GZIP gzip REQUIRED)
configure_file(${SANDBOX_AGENT_PKG_DIR}/deb/changelog.in ${SANDBOX_AGENT_GEN_DIR}/doc/changelog @ONLY)
configure_file(${SANDBOX_AGENT_PKG_DIR}/deb/copyright.in ${SANDBOX_AGENT_GEN_DIR}/doc/copyright @ONLY)
set(SANDBOX_AGENT_GZ)
foreach(f ${SANDBOX_AGENT_PKG_DIR}/sandbox-agent.8 ${SANDBOX_AGENT_PKG_DIR}/sandboxctl.1
          ${SANDBOX_AGENT_GEN_DIR}/doc/changelog)
  get_filename_component(n ${f} NAME)
  add_custom_command(OUTPUT ${SANDBOX_AGENT_GEN_DIR}/gz/${n}.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${SANDBOX_AGENT_GEN_DIR}/gz
    COMMAND sh -c "'${SANDBOX_AGENT_GZIP}' -9n < '${f}' > '${SANDBOX_AGENT_GEN_DIR}/gz/${n}.gz'"
    DEPENDS ${f} VERBATIM)
  list(APPEND SANDBOX_AGENT_GZ ${SANDBOX_AGENT_GEN_DIR}/gz/${n}.gz)
endforeach()
add_custom_target(sandbox-agent-docs ALL DEPENDS ${SANDBOX_AGENT_GZ})
install(FILES ${SANDBOX_AGENT_GEN_DIR}/gz/sandbox-agent.8.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT man)
install(FILES ${SANDBOX_AGENT_GEN_DIR}/gz/sandboxctl.1.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT man)
install(FILES ${SANDBOX_AGENT_GEN_DIR}/gz/changelog.gz ${SANDBOX_AGENT_GEN_DIR}/doc/copyright
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/sandbox-agent COMPONENT man)
install(FILES ${SANDBOX_AGENT_PKG_DIR}/deb/lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides RENAME sandbox-agent
        COMPONENT man)

# ---------------------------------------------------------------- CPack
set(CPACK_PACKAGE_NAME sandbox-agent)
set(CPACK_PACKAGE_VENDOR "sandbox-agent")
set(CPACK_PACKAGE_CONTACT "${SANDBOX_AGENT_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SANDBOX_AGENT_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "in-guest execution agent for sandbox VMs")
set(CPACK_PACKAGE_DESCRIPTION
    "sandbox-agent runs processes and moves files inside a sandbox VM for a\ncontrol plane that reaches it over vsock, TCP or a unix socket.\nsandboxctl is its command line.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Stripped binaries; their debug information (split off by build id) goes
# to sandbox-agent-dbgsym_VERSION_ARCH.ddeb beside the .deb.
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
if(SANDBOX_AGENT_STATIC)
  # One self-contained binary: nothing to depend on.
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "")
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libev4 | libev4t64, libprotobuf-c1, zlib1g, libdeflate0")
endif()
# The binaries, the unit, its settings and the man pages; not the OpenRC
# script, and not the tests (which install nothing).
set(CPACK_COMPONENTS_ALL Unspecified service man)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
configure_file(${SANDBOX_AGENT_PKG_DIR}/deb/postinst.in ${SANDBOX_AGENT_GEN_DIR}/deb/postinst @ONLY)
configure_file(${SANDBOX_AGENT_PKG_DIR}/deb/prerm.in ${SANDBOX_AGENT_GEN_DIR}/deb/prerm @ONLY)
configure_file(${SANDBOX_AGENT_PKG_DIR}/deb/postrm.in ${SANDBOX_AGENT_GEN_DIR}/deb/postrm @ONLY)
file(WRITE ${SANDBOX_AGENT_GEN_DIR}/deb/conffiles "/etc/default/sandbox-agent\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${SANDBOX_AGENT_GEN_DIR}/deb/postinst ${SANDBOX_AGENT_GEN_DIR}/deb/prerm
    ${SANDBOX_AGENT_GEN_DIR}/deb/postrm ${SANDBOX_AGENT_GEN_DIR}/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
