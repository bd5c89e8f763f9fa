/* Randomness and ids. Every random byte comes from the kernel (getrandom);
 * when it cannot be had the caller gets an error, never zeros or a guess. */
#ifndef VMA_CORE_RAND_H
#define VMA_CORE_RAND_H

#include <stddef.h>

#include "core/err.h"

/* Fills buf with n random bytes (blocks only until the kernel's pool is
 * initialised, early at boot). On failure buf is wiped and VM_ERR_IO returned. */
int rand_bytes(void *buf, size_t n, struct vm_err *err);

/* A UUID version 4 text ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", lower case). */
#define ID_LEN 36
/* Writes a new random id into out; on failure out is "" and an error returned. */
int id_new(char out[ID_LEN + 1], struct vm_err *err);

#endif
