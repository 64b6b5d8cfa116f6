# Install rules; the exported package config and uvctx.pc are added by
# cmake/uvctx-package.cmake when present.
include(${PROJECT_SOURCE_DIR}/cmake/uvctx-package.cmake OPTIONAL)
