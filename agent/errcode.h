/* errcode.h - the one table from a negative errno to the protocol's
 * Error.Code, used wherever an errno becomes an answer.
 * Errors: none; this is where errors become codes. */
#ifndef SA_ERRCODE_H
#define SA_ERRCODE_H

/* Error.Code for a negative errno (0 gives CODE_UNSPECIFIED; an errno with
 * no better code gives INTERNAL). */
int errcode_from_errno(int neg_errno);

#endif
