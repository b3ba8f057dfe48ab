# Installs procpool into a scratch prefix, then builds and runs test/consumer against it.
file(REMOVE_RECURSE ${BINARY_DIR})
set(prefix ${BINARY_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}")
  endif()
endfunction()

run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR}/procpool -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
    -DPROCPOOL_BUILD_TESTS=OFF -DPROCPOOL_BUILD_EXAMPLES=OFF -DPROCPOOL_BUILD_BENCHMARKS=OFF
    -DPROCPOOL_BUILD_SERVICE=OFF -DPROCPOOL_INSTALL=ON
    -DCMAKE_INSTALL_PREFIX=${prefix})
run(${CMAKE_COMMAND} --build ${BINARY_DIR}/procpool)
run(${CMAKE_COMMAND} --install ${BINARY_DIR}/procpool)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/test/consumer -B ${BINARY_DIR}/consumer -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${BINARY_DIR}/consumer)
run(${BINARY_DIR}/consumer/consumer)
