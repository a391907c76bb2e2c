/*
 * listener.h — the one connection that runs LISTEN pix_message and wakes parked reads.
 *
 * Every enqueue path in the extension runs NOTIFY pix_message, '<ispb>'. A notification wakes the
 * reads parked for that ISPB. Notifications sent while this connection is down are lost, so
 * every (re)connection wakes all parked reads, and while it stays down they are woken once a
 * second.
 */
#ifndef PIXD_LISTENER_H
#define PIXD_LISTENER_H

void listener_init(void);
void listener_shutdown(void);
/* 1 while every LISTEN connection (--db and each shard's) is listening. */
int listener_is_listening(void);
/*
 * Which LISTEN session is active (0 while not listening). Two equal non-zero values mean the
 * listener heard every notification between the two moments they were read.
 */
unsigned listener_epoch(void);
/* Shards heard through a router (0 on a single database), and whether shard i (0..) is listening.
 */
int listener_shards(void);
int listener_shard_is_listening(int shard);

#endif
