// Control-channel probe for shm:// (Spec/shm.md, SHM-CTRL-5): the round
// trip of an 8-byte message between two processes over the two designs the
// spec weighs, with nothing of the framework around them.
//
//   seqpacket   an AF_UNIX SOCK_SEQPACKET socket pair (what shm:// uses)
//   ring+futex  a ring per direction in shared memory; a reader that finds
//               its ring empty sleeps in FUTEX_WAIT, the writer wakes it
//   ring+eventfd the same rings, sleeping in read() on an eventfd instead
//   ring+spin   the same rings, the reader polling (burns a core; the floor)
//
// Build and run (from the repository root):
//   cc -O2 -o /tmp/control_channel_latency Benchmarks/Probes/control_channel_latency.c
//   /tmp/control_channel_latency
// Prints the median and 99th percentile round trip of each design.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WARMUP = 1000, ROUNDS = 20000, SLOTS = 256 };
enum Wake { WAKE_FUTEX, WAKE_EVENTFD, WAKE_SPIN };

// One direction: a single-producer single-consumer ring of 8-byte messages.
// `sleeping` is set by a reader about to sleep; the writer wakes it only then.
typedef struct {
  _Atomic uint32_t head;  // next slot the writer fills (futex word)
  _Atomic uint32_t tail;  // next slot the reader takes
  _Atomic uint32_t sleeping;
  int eventfd;
  uint64_t slots[SLOTS];
} Ring;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void futex(_Atomic uint32_t *word, int op, uint32_t value) {
  syscall(SYS_futex, (uint32_t *)word, op, value, NULL, NULL, 0);
}

static void ring_put(Ring *ring, uint64_t value, enum Wake wake) {
  uint32_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
  ring->slots[head % SLOTS] = value;  // never full: one message in flight
  atomic_store_explicit(&ring->head, head + 1, memory_order_seq_cst);
  if (wake == WAKE_SPIN || !atomic_load_explicit(&ring->sleeping, memory_order_seq_cst)) return;
  if (wake == WAKE_FUTEX) {
    futex(&ring->head, FUTEX_WAKE, 1);
  } else {
    uint64_t one = 1;
    if (write(ring->eventfd, &one, sizeof one) != sizeof one) abort();
  }
}

static uint64_t ring_get(Ring *ring, enum Wake wake) {
  uint32_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
  for (;;) {
    uint32_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    if (head != tail) break;
    if (wake == WAKE_SPIN) continue;
    // Announce the sleep, then re-check: a writer that stored before seeing
    // the flag is caught here, one that stored after wakes us.
    atomic_store_explicit(&ring->sleeping, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ring->head, memory_order_seq_cst) == tail) {
      if (wake == WAKE_FUTEX) {
        futex(&ring->head, FUTEX_WAIT, tail);
      } else {
        uint64_t count;
        if (read(ring->eventfd, &count, sizeof count) != sizeof count) abort();
      }
    }
    atomic_store_explicit(&ring->sleeping, 0, memory_order_relaxed);
  }
  uint64_t value = ring->slots[tail % SLOTS];
  atomic_store_explicit(&ring->tail, tail + 1, memory_order_release);
  return value;
}

static int compare(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *times) {
  qsort(times, ROUNDS, sizeof *times, compare);
  printf("%-13s round trip median %6.1f us, p99 %6.1f us\n", name, times[ROUNDS / 2] / 1e3,
         times[ROUNDS * 99 / 100] / 1e3);
}

static void measure_seqpacket(uint64_t *times) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair) != 0) abort();
  pid_t child = fork();
  uint64_t message = 0;
  if (child == 0) {  // echo
    close(pair[0]);
    while (recv(pair[1], &message, sizeof message, 0) == sizeof message) {
      if (send(pair[1], &message, sizeof message, 0) != sizeof message) break;
    }
    _exit(0);
  }
  close(pair[1]);
  for (int index = 0; index < WARMUP + ROUNDS; index++) {
    uint64_t started = now_ns();
    message = index;
    if (send(pair[0], &message, sizeof message, 0) != sizeof message) abort();
    if (recv(pair[0], &message, sizeof message, 0) != sizeof message || message != (uint64_t)index) abort();
    if (index >= WARMUP) times[index - WARMUP] = now_ns() - started;
  }
  close(pair[0]);
  waitpid(child, NULL, 0);
}

static void measure_ring(enum Wake wake, uint64_t *times) {
  // MAP_SHARED anonymous memory stays shared across fork, as a memfd
  // passed with SCM_RIGHTS would be between unrelated processes.
  Ring *rings = mmap(NULL, 2 * sizeof(Ring), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (rings == MAP_FAILED) abort();
  memset(rings, 0, 2 * sizeof(Ring));
  rings[0].eventfd = eventfd(0, 0);
  rings[1].eventfd = eventfd(0, 0);
  Ring *request = &rings[0], *reply = &rings[1];
  pid_t child = fork();
  if (child == 0) {  // echo; UINT64_MAX ends it
    for (;;) {
      uint64_t message = ring_get(request, wake);
      if (message == UINT64_MAX) _exit(0);
      ring_put(reply, message, wake);
    }
  }
  for (int index = 0; index < WARMUP + ROUNDS; index++) {
    uint64_t started = now_ns();
    ring_put(request, (uint64_t)index, wake);
    if (ring_get(reply, wake) != (uint64_t)index) abort();
    if (index >= WARMUP) times[index - WARMUP] = now_ns() - started;
  }
  ring_put(request, UINT64_MAX, wake);
  waitpid(child, NULL, 0);
  munmap(rings, 2 * sizeof(Ring));
}

int main(void) {
  uint64_t *times = malloc(ROUNDS * sizeof *times);
  measure_seqpacket(times);
  report("seqpacket", times);
  measure_ring(WAKE_FUTEX, times);
  report("ring+futex", times);
  measure_ring(WAKE_EVENTFD, times);
  report("ring+eventfd", times);
  measure_ring(WAKE_SPIN, times);
  report("ring+spin", times);
  free(times);
  return 0;
}
