# `make package`: a Debian package of vm-agent built with CPack. The binary goes
# to /usr/bin; the maintainer scripts (installers/debian/) call the binary's own
# lifecycle commands instead of repeating what they do.
install(FILES installers/config.example.yaml docs/lifecycle.md
        DESTINATION share/doc/vm-agent)
install(FILES installers/vm-agent.service DESTINATION share/vm-agent)

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "vm-agent")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_PACKAGE_CONTACT "vm-agent maintainers <vm-agent@example.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "MSP fleet management agent (Piko tunnel, probes, health)")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${CMAKE_SOURCE_DIR}/installers/debian/postinst;${CMAKE_SOURCE_DIR}/installers/debian/prerm;${CMAKE_SOURCE_DIR}/installers/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
