# Install rules, the exported package config and uvctx.pc
# (cmake/uvctx-package.cmake).
include(${PROJECT_SOURCE_DIR}/cmake/uvctx-package.cmake)
