# Warning and sanitizer settings, applied per target (never globally).

function(uvctx_warnings tgt)
  target_compile_options(${tgt} PRIVATE
    -Wall -Wextra -Wstrict-prototypes
    -Werror=implicit-function-declaration
    -Werror=incompatible-pointer-types)
  if(UVCTX_WERROR)
    target_compile_options(${tgt} PRIVATE -Werror)
  endif()
endfunction()

# UVCTX_SANITIZE=address enables ASan, LeakSanitizer and UBSan together;
# thread enables TSan; undefined enables UBSan alone. UBSan aborts on the
# first report so that a test cannot pass over undefined behaviour.
function(uvctx_sanitize tgt)
  if(UVCTX_SANITIZE STREQUAL "")
    return()
  elseif(UVCTX_SANITIZE STREQUAL "address")
    set(flags -fsanitize=address,undefined -fno-sanitize-recover=undefined
              -fno-omit-frame-pointer)
  elseif(UVCTX_SANITIZE STREQUAL "thread")
    set(flags -fsanitize=thread -fno-omit-frame-pointer)
  elseif(UVCTX_SANITIZE STREQUAL "undefined")
    set(flags -fsanitize=undefined -fno-sanitize-recover=undefined)
  else()
    message(FATAL_ERROR "UVCTX_SANITIZE must be address, thread or undefined")
  endif()
  target_compile_options(${tgt} PRIVATE ${flags})
  target_link_options(${tgt} PUBLIC ${flags})
endfunction()
