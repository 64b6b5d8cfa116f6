# The stream, copy and pipe suites (lib/io/). They run real peers on
# loopback; counts scale down under sanitizers (see UVT_SCALE in the
# sources), the 256 MiB transfers run in the plain build only.
foreach(suite stream copy pipe)
  uvctx_add_test(test_${suite}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_${suite}.c TIMEOUT 600)
endforeach()
