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

/* Every other errno the table names, with the code a client sees. */
TEST(the_rest_of_the_table)
{
    static const struct {
        int e, code;
    } t[] = {
        {ENXIO, CODE(NOT_FOUND)},
        {EDQUOT, CODE(RESOURCE_EXHAUSTED)},
        {ENOMEM, CODE(RESOURCE_EXHAUSTED)},
        {ENFILE, CODE(RESOURCE_EXHAUSTED)},
        {EAGAIN, CODE(RESOURCE_EXHAUSTED)},
        {EFBIG, CODE(RESOURCE_EXHAUSTED)},
        {EISDIR, CODE(FAILED_PRECONDITION)},
        {EBUSY, CODE(FAILED_PRECONDITION)},
        {ETXTBSY, CODE(FAILED_PRECONDITION)},
        {EXDEV, CODE(FAILED_PRECONDITION)},
        {ELOOP, CODE(FAILED_PRECONDITION)},
        {E2BIG, CODE(INVALID_ARGUMENT)},
        {EMSGSIZE, CODE(INVALID_ARGUMENT)},
        {ERANGE, CODE(INVALID_ARGUMENT)},
        {ENOSYS, CODE(UNIMPLEMENTED)},
        {EPIPE, CODE(IO_ERROR)},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (errcode_from_errno(-t[i].e) != t[i].code)
            FAIL("%s: code %d, expected %d", strerror(t[i].e), errcode_from_errno(-t[i].e),
                 t[i].code);
    }
}

TEST(fallbacks)
{
    ASSERT_EQ(errcode_from_errno(0), CODE(CODE_UNSPECIFIED));
    ASSERT_EQ(errcode_from_errno(-EDOM), CODE(INTERNAL));
    ASSERT_EQ(errcode_from_errno(-100000), CODE(INTERNAL));
}

TEST_MAIN(TEST_ENTRY(the_codes_clients_branch_on), TEST_ENTRY(the_rest_of_the_table),
          TEST_ENTRY(fallbacks))
