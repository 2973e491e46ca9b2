# `cmake --install`: the public headers, libdsinfer (C++), libdsinfer_c (C), the `dsinfer` command line, a CMake
# package (find_package(dsinfer CONFIG): dsinfer::dsinfer, dsinfer::c) and pkg-config files (dsinfer, dsinfer_c).
# The internal static libraries and lib/'s headers are not installed. Checked by the test install_consumers.
include(CMakePackageConfigHelpers)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/dsinfer" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")
install(FILES "${PROJECT_BINARY_DIR}/include/dsinfer/version.h" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/dsinfer")
install(FILES "${PROJECT_SOURCE_DIR}/capi/dsinfer.h" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(TARGETS dsinfer dsinfer_c EXPORT dsinferTargets
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" NAMELINK_COMPONENT Development
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
# The command line finds libdsinfer next to it ($ORIGIN/../lib), so an install prefix can be moved.
file(RELATIVE_PATH _dsinfer_bin_to_lib "/prefix/${CMAKE_INSTALL_BINDIR}" "/prefix/${CMAKE_INSTALL_LIBDIR}")
set_target_properties(dsinfer_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${_dsinfer_bin_to_lib}")
install(TARGETS dsinfer_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

set(_dsinfer_cmake_dir "${CMAKE_INSTALL_LIBDIR}/cmake/dsinfer")
install(EXPORT dsinferTargets NAMESPACE dsinfer:: DESTINATION "${_dsinfer_cmake_dir}")
configure_package_config_file(cmake/dsinferConfig.cmake.in "${PROJECT_BINARY_DIR}/dsinferConfig.cmake"
                              INSTALL_DESTINATION "${_dsinfer_cmake_dir}")
# Before 1.0 a minor release may break the API, so only the same major.minor satisfies a request.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/dsinferConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/dsinferConfig.cmake" "${PROJECT_BINARY_DIR}/dsinferConfigVersion.cmake"
        DESTINATION "${_dsinfer_cmake_dir}")

# pkg-config: paths relative to ${prefix} (pcfiledir-based), so the files stay right when the prefix moves.
file(RELATIVE_PATH _dsinfer_pc_to_prefix "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
set(DSINFER_PC_PREFIX "\${pcfiledir}/${_dsinfer_pc_to_prefix}")
foreach(pc dsinfer dsinfer_c)
  configure_file("cmake/${pc}.pc.in" "${PROJECT_BINARY_DIR}/${pc}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/${pc}.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endforeach()
