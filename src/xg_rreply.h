/*
 * xg_rreply.h: hiredis reply objects built in one block per reply.
 *
 * hiredis' own reply functions make two allocations per string and two
 * per array, and free them one by one: for an XREAD answer that is about
 * twelve objects per stream entry, the largest part of what an edge spent
 * on an entry (docs/performance.md, "The edge's work per entry"). This
 * function set builds the same redisReply tree (the same fields, strings
 * NUL-terminated, element vectors of the announced length) in chunks
 * that belong to the reply's root, and freeObject() of the root frees
 * them all. Callbacks read the tree as before and never free a part of
 * it (nothing in exgate does).
 *
 * hiredis 0.14 calls freeObject() only with a reply's root (a complete
 * one after its callback, a partial one on a protocol error or when the
 * reader is freed): that is what makes a per-reply block possible.
 */
#ifndef XG_RREPLY_H
#define XG_RREPLY_H

#include <hiredis/read.h>

/*
 * The function set, for a reader's fn (redisReaderCreateWithFunctions(),
 * or a context's c.reader->fn before its first reply: xg_rconn sets it
 * at the context's creation with xg_rconn_set_block_replies()). Static:
 * never freed, never changed.
 */
redisReplyObjectFunctions *xg_rreply_functions(void);

#endif
