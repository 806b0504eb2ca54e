# packaging/install-config.cmake - runs at install time (from install(CODE)
# in install.cmake), when the real prefix is known: `cmake --install
# --prefix P` and CPack (prefix /usr) each get a unit and an init script
# that name their own paths. A /usr install puts configuration in /etc, any
# other prefix in PREFIX/etc. Inputs: SA_SRC (packaging/), SA_GEN (a build
# directory), SA_PART (service or openrc).
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(SA_ETC /etc)
else()
  set(SA_ETC ${CMAKE_INSTALL_PREFIX}/etc)
endif()
set(CMAKE_INSTALL_FULL_BINDIR ${CMAKE_INSTALL_PREFIX}/bin)
set(SANDBOX_AGENT_DEFAULTS_FILE ${SA_ETC}/default/sandbox-agent)
set(SANDBOX_AGENT_OPENRC_CONF ${SA_ETC}/conf.d/sandbox-agent)

if(SA_PART STREQUAL "service")
  configure_file(${SA_SRC}/sandbox-agent.service.in ${SA_GEN}/sandbox-agent.service @ONLY)
  file(INSTALL DESTINATION ${CMAKE_INSTALL_PREFIX}/lib/systemd/system TYPE FILE
       FILES ${SA_GEN}/sandbox-agent.service)
  file(INSTALL DESTINATION ${SA_ETC}/default TYPE FILE RENAME sandbox-agent
       FILES ${SA_SRC}/sandbox-agent.default)
  # Where the token goes: only root may look inside.
  file(MAKE_DIRECTORY ${SA_GEN}/etc/sandbox-agent)
  file(INSTALL DESTINATION ${SA_ETC} TYPE DIRECTORY FILES ${SA_GEN}/etc/sandbox-agent
       DIR_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
elseif(SA_PART STREQUAL "openrc")
  configure_file(${SA_SRC}/openrc/sandbox-agent.in ${SA_GEN}/openrc/sandbox-agent @ONLY)
  file(INSTALL DESTINATION ${SA_ETC}/init.d TYPE PROGRAM FILES ${SA_GEN}/openrc/sandbox-agent)
  file(INSTALL DESTINATION ${SA_ETC}/conf.d TYPE FILE RENAME sandbox-agent
       FILES ${SA_SRC}/openrc/sandbox-agent.confd)
endif()
