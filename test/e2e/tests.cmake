# End-to-end tests of the programs in tools/ (uvctx-relay). They
# drive the relay built in this mode (plain, ASan+UBSan or TSan) with real
# clients and servers on loopback: curl, openssl s_client/s_server and
# Python. See test/e2e/relay/relay_test.py; a missing tool skips (exit 77).
if(TARGET uvctx-relay)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    # The resolver shim of test/uv (test names only), preloaded into the
    # relay by the dial case. Not instrumented: it only forwards calls.
    add_library(uvctx_gai_preload MODULE
                ${CMAKE_CURRENT_LIST_DIR}/../uv/gai_gate.c)
    target_link_libraries(uvctx_gai_preload PRIVATE ${CMAKE_DL_LIBS}
                          Threads::Threads)
    foreach(case cli plain tls upstream_tls slow deadlines drain workers
                 emfile metrics trace debug page rules
                 prometheus logs halfclose dial debug_access)
      add_test(NAME relay_${case}
        COMMAND ${Python3_EXECUTABLE}
                ${CMAKE_CURRENT_LIST_DIR}/relay/relay_test.py
                --relay $<TARGET_FILE:uvctx-relay>
                --gen-certs ${CMAKE_CURRENT_LIST_DIR}/../tls/gen-certs.sh
                --sanitize "${UVCTX_SANITIZE}"
                --gai-preload $<TARGET_FILE:uvctx_gai_preload>
                ${case})
      set_tests_properties(relay_${case} PROPERTIES
        TIMEOUT 180 LABELS "tools;relay" SKIP_RETURN_CODE 77)
    endforeach()
    # The slow-client test opens 1,000 connections; keep it away from the
    # other timing-sensitive relay tests when ctest runs in parallel.
    set_tests_properties(relay_slow relay_emfile PROPERTIES RUN_SERIAL ON)
  else()
    message(STATUS "python3 not found: relay end-to-end tests disabled")
  endif()
endif()

# Hostile clients and faults (test/e2e/relay/hardening_test.py, built on
# relay_test.py's plumbing): TLS failure reasons after the handshake,
# slowhttptest's four attacks on the plain and TLS relay, backends killed
# under wrk load and resetting at accept, after reading, mid-response.
# (Out of descriptors is relay_emfile.)
if(TARGET uvctx-relay AND Python3_Interpreter_FOUND)
  foreach(case tls_reasons slowhttp backend_faults)
    add_test(NAME relay_hard_${case}
      COMMAND ${Python3_EXECUTABLE}
              ${CMAKE_CURRENT_LIST_DIR}/relay/hardening_test.py
              --relay $<TARGET_FILE:uvctx-relay>
              --gen-certs ${CMAKE_CURRENT_LIST_DIR}/../tls/gen-certs.sh
              --sanitize "${UVCTX_SANITIZE}"
              ${case})
    set_tests_properties(relay_hard_${case} PROPERTIES
      TIMEOUT 300 LABELS "tools;relay" SKIP_RETURN_CODE 77)
  endforeach()
  # Hundreds of connections and timing windows: alone.
  set_tests_properties(relay_hard_slowhttp relay_hard_backend_faults
    PROPERTIES RUN_SERIAL ON)
endif()
