// fault.hpp — FOR TESTS ONLY: a seam that makes chosen syscalls fail on
// purpose, so that tests can prove preforkd survives them (STYLE 3.1.5:
// "after start-up, preforkd does not die"). Not a feature: it is documented
// here and nowhere in the user documentation.
//
// The environment variable PREFORKD_FAULTS holds comma-separated rules
//   point:ERRNO:nth[:count]
// e.g. `epoll_ctl:ENOMEM:5:3`: the 5th, 6th and 7th calls at the point
// `epoll_ctl` fail with ENOMEM. `count` defaults to 1; 0 means every call
// from the nth on. ERRNO is a name (EAGAIN, EMFILE, ENOMEM, ...) or a
// number. Calls are counted per point from 1, from the moment the rules are
// loaded; several rules may name the same point. Points, each consulted by
// the sys wrapper that makes the call, before the call:
//   fork       sys::spawn (SpawnError{Fork, err})
//   pipe2      sys::make_pipe
//   accept4    sys::accept_client
//   epoll_ctl  Epoll::add/modify/try_add/try_modify (not remove)
//   socket     sys::bind_listener, sys::open_notify_socket
//   recvmsg    sys::receive_datagram (the NOTIFY_SOCKET datagrams)
//   write      sys::write_some, sys::send_some (and what loops on them)
//   open       sys::open_file
// An injected failure is announced on stderr ("preforkd: PREFORKD_FAULTS:
// epoll_ctl call 5: injected ENOMEM"), so that a test can see it fired.
// A malformed PREFORKD_FAULTS is reported once on stderr and ignored as a
// whole (nothing is injected).
//
// Must never: allocate, lock or throw on the hot path (injected() allocates
// only when it parses the variable on its first call), or run in a child
// between fork and exec. Single-threaded, as preforkd is (T8).
#pragma once

#include <string>

namespace preforkd::sys::fault {

// Reads PREFORKD_FAULTS once; later calls do nothing. preforkd calls it
// first thing in main(); injected() calls it if nobody did.
void load_from_environment();

// Counts one call at `point` and returns the errno to inject, or 0 to make
// the real call. Unknown points are never failed.
int injected(const char* point) noexcept;

// Replaces the rules (as if PREFORKD_FAULTS were `spec`) and restarts every
// count from 0; "" removes them all. A malformed spec is reported and
// leaves no rule at all.
void set_spec_for_testing(const std::string& spec);

// "" if `spec` is a well-formed PREFORKD_FAULTS value, else why it is not
// ("bad entry `x:y`: unknown point `x`").
std::string check_spec(const std::string& spec);

// "ENOMEM" for ENOMEM; nullptr for a number the seam has no name for.
const char* errno_name(int err) noexcept;

}  // namespace preforkd::sys::fault
