// qopt's version as built: the project version and `git describe` of the source tree
// ("0.1.0+4b1c2d3-dirty"), generated at every build by cmake/version.cmake.
#pragma once

namespace qopt {

const char* QoptVersion();

}  // namespace qopt
