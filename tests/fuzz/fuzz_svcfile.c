/* libFuzzer target: the services.d file parser and the probe specs that
 * sandboxctl shares with it. Whatever the bytes, a parse ends with a
 * StartProcess that packs (every string and message it holds is sound) or
 * an error naming the file, and frees everything it took. */
#include "svcfile.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    Sandbox__Agent__V1__StartProcess *sp = NULL;

    if (svcfile_parse((const char *)data, size, "fuzz.conf", &sp, err, sizeof err) == 0) {
        size_t n = sandbox__agent__v1__start_process__get_packed_size(sp);
        uint8_t *buf = malloc(n ? n : 1);
        if (buf) {
            sandbox__agent__v1__start_process__pack(sp, buf);
            free(buf);
        }
        if (!sp->command || !sp->command[0] || !sp->tag || !sp->tag[0] || !sp->restart)
            abort(); /* a parsed service always has these */
        sandbox__agent__v1__start_process__free_unpacked(sp, NULL);
    } else if (strncmp(err, "fuzz.conf", 9)) {
        abort(); /* every error names the file */
    }
    /* The same bytes as one probe spec. */
    if (size < 4096) {
        char spec[4096];
        memcpy(spec, data, size);
        spec[size] = 0;
        Sandbox__Agent__V1__Probe *p = svcfile_parse_probe(spec, err, sizeof err);
        if (p)
            sandbox__agent__v1__probe__free_unpacked(p, NULL);
    }
    return 0;
}
