/* errcode.c - see errcode.h.
 * Errors: none (an unmapped errno becomes INTERNAL). */
#include "errcode.h"

#include "pb.h"

#include <errno.h>

int errcode_from_errno(int neg_errno)
{
    switch (-neg_errno) {
    case 0: return CODE(CODE_UNSPECIFIED);
    case ENOENT:
    case ESRCH:
    case ENXIO: return CODE(NOT_FOUND);
    case EEXIST: return CODE(ALREADY_EXISTS);
    case EACCES:
    case EPERM:
    case EROFS: return CODE(PERMISSION_DENIED);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EAGAIN:
    case EFBIG: return CODE(RESOURCE_EXHAUSTED);
    case EISDIR:
    case ENOTDIR:
    case ENOTEMPTY:
    case EBUSY:
    case ETXTBSY:
    case EXDEV:
    case ELOOP: return CODE(FAILED_PRECONDITION);
    case EINVAL:
    case ENAMETOOLONG:
    case E2BIG:
    case EMSGSIZE:
    case ERANGE: return CODE(INVALID_ARGUMENT);
    case ENOSYS:
    case EOPNOTSUPP: return CODE(UNIMPLEMENTED);
    case ECANCELED: return CODE(CANCELLED);
    case ETIMEDOUT: return CODE(DEADLINE_EXCEEDED);
    case EIO:
    case EPIPE: return CODE(IO_ERROR);
    default: return CODE(INTERNAL);
    }
}
