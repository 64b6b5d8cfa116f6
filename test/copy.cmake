# The stream, copy and pipe suites (issue 3). They run real peers on
# loopback; counts scale down under sanitizers (see UVT_SCALE in the
# sources), the 256 MiB transfers run in the plain build only.
foreach(suite stream copy pipe)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_${suite}.c)
    uvctx_add_test(test_${suite} SOURCES test_${suite}.c TIMEOUT 600)
  endif()
endforeach()
