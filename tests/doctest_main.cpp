// One main for every doctest binary. POSIX signal handling of doctest is off:
// the tests send and block signals themselves.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#include <doctest/doctest.h>
