/* fixture.c - the C side of the skip mechanism, for test_skips.py.
 *
 * Not a test of kvd: tests/CMakeLists.txt builds it twice, as skip_fixture
 * and as skip_fixture_strict (with KV_CI_STRICT, like a durability test
 * file), and tests/integration/test_skips.py runs them and checks their
 * exit status and output.
 */
#include "test.h"

KV_TEST(passes, "a test that passes") { CHECK_INT(1 + 1, 2); }

KV_TEST(skips, "a test that cannot run here") {
  KV_SKIP("the fixture needs %s", "a tool that is missing");
  KV__FAIL("KV_SKIP returned");
}
