#ifndef CSHIM_H
#define CSHIM_H
/* Only what Swift cannot do itself (see shared/reference/swift-notes.md). */

/* Pins the calling thread to one CPU; returns 0 or an errno value. */
int cshim_pin_current_thread(int cpu);
/* Number of CPUs this process may run on. */
int cshim_allowed_cpus(void);

#endif
