# Builds the README's embedding example as a new user would: installs this
# build into a scratch prefix, writes the README's CMakeLists.txt and main.cc
# (extracted byte for byte from between their markers; the project sets no C++
# standard) and builds them with find_package(poolscope), then runs the
# program against the test database.
#
#   cmake -DPOOLSCOPE_BUILD_DIR=… -DREADME=…/README.md -DWORK_DIR=… -P run.cmake

# Writes the fenced code block between "<!-- downstream NAME begins -->" and
# "<!-- downstream NAME ends -->" of the README to OUTPUT.
function(extract_readme_block readme name output)
  file(READ ${readme} text)
  set(begin_marker "<!-- downstream ${name} begins -->\n")
  set(end_marker "<!-- downstream ${name} ends -->")
  string(FIND "${text}" "${begin_marker}" begin)
  string(FIND "${text}" "${end_marker}" end)
  if(begin EQUAL -1 OR end EQUAL -1 OR end LESS begin)
    message(FATAL_ERROR "${readme}: no block between '${begin_marker}' and '${end_marker}'")
  endif()
  string(LENGTH "${begin_marker}" marker_length)
  math(EXPR begin "${begin} + ${marker_length}")
  math(EXPR length "${end} - ${begin}")
  string(SUBSTRING "${text}" ${begin} ${length} block)
  # The block is one fenced code block: drop its opening and closing fences.
  if(NOT block MATCHES "^```[a-z]*\n(.*\n)```\n$")
    message(FATAL_ERROR "${readme}: the ${name} block is not exactly one fenced code block")
  endif()
  file(WRITE ${output} "${CMAKE_MATCH_1}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${POOLSCOPE_BUILD_DIR} --prefix ${WORK_DIR}/prefix
  RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed")
endif()
extract_readme_block(${README} CMakeLists.txt ${WORK_DIR}/source/CMakeLists.txt)
extract_readme_block(${README} main.cc ${WORK_DIR}/source/main.cc)
file(READ ${WORK_DIR}/source/CMakeLists.txt downstream_cmake)
if(downstream_cmake MATCHES "CMAKE_CXX_STANDARD|cxx_std_")
  message(FATAL_ERROR "the README's CMakeLists.txt sets a C++ standard; it must come from poolscope::pool")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/source -B ${WORK_DIR}/build
  -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the downstream project failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the downstream project failed")
endif()
set(ENV{DATABASE_URL} "$ENV{POOLSCOPE_TEST_DATABASE_URL}")
execute_process(COMMAND ${WORK_DIR}/build/my_service RESULT_VARIABLE rc
  OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(rc OR NOT out MATCHES "answer: 42\n")
  message(FATAL_ERROR "my_service failed (${rc}): ${err}")
endif()
# wait_until_ready() in the example: the pool has finished starting when the
# program reports its state.
if(NOT out MATCHES "state: (healthy|degraded|unhealthy)\n")
  message(FATAL_ERROR "my_service did not report a ready pool: ${out}")
endif()
