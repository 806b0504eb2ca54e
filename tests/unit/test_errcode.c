/* Unit tests of the errno to Error.Code table (agent/errcode.c): the codes
 * clients branch on, and the fallbacks. */
#include "errcode.h"
#include "harness.h"
#include "pb.h"

#include <errno.h>

TEST(the_codes_clients_branch_on)
{
    ASSERT_EQ(errcode_from_errno(-ENOENT), CODE(NOT_FOUND));
    ASSERT_EQ(errcode_from_errno(-ESRCH), CODE(NOT_FOUND));
    ASSERT_EQ(errcode_from_errno(-EEXIST), CODE(ALREADY_EXISTS));
    ASSERT_EQ(errcode_from_errno(-EACCES), CODE(PERMISSION_DENIED));
    ASSERT_EQ(errcode_from_errno(-EPERM), CODE(PERMISSION_DENIED));
    ASSERT_EQ(errcode_from_errno(-EROFS), CODE(PERMISSION_DENIED));
    ASSERT_EQ(errcode_from_errno(-ENOSPC), CODE(RESOURCE_EXHAUSTED));
    ASSERT_EQ(errcode_from_errno(-EMFILE), CODE(RESOURCE_EXHAUSTED));
    ASSERT_EQ(errcode_from_errno(-ENOTDIR), CODE(FAILED_PRECONDITION));
    ASSERT_EQ(errcode_from_errno(-ENOTEMPTY), CODE(FAILED_PRECONDITION));
    ASSERT_EQ(errcode_from_errno(-EINVAL), CODE(INVALID_ARGUMENT));
    ASSERT_EQ(errcode_from_errno(-ENAMETOOLONG), CODE(INVALID_ARGUMENT));
    ASSERT_EQ(errcode_from_errno(-EOPNOTSUPP), CODE(UNIMPLEMENTED));
    ASSERT_EQ(errcode_from_errno(-ECANCELED), CODE(CANCELLED));
    ASSERT_EQ(errcode_from_errno(-ETIMEDOUT), CODE(DEADLINE_EXCEEDED));
    ASSERT_EQ(errcode_from_errno(-EIO), CODE(IO_ERROR));
}

TEST(fallbacks)
{
    ASSERT_EQ(errcode_from_errno(0), CODE(CODE_UNSPECIFIED));
    ASSERT_EQ(errcode_from_errno(-EDOM), CODE(INTERNAL));
    ASSERT_EQ(errcode_from_errno(-100000), CODE(INTERNAL));
}

TEST_MAIN(TEST_ENTRY(the_codes_clients_branch_on), TEST_ENTRY(fallbacks))
