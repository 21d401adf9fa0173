#include "sys/signal_fd.hpp"

#include <sys/signalfd.h>

#include <algorithm>

#include "sys/error.hpp"

namespace preforkd::sys {

namespace {
bool g_instance_alive = false;  // the mask is process-wide: exactly one owner
}

SignalFd::SignalFd(const std::vector<int>& signals) {
  if (g_instance_alive) throw SysError(EBUSY, "signalfd: a SignalFd already owns the signal mask");
  sigemptyset(&set_);
  for (int s : signals) sigaddset(&set_, s);
  if (sigprocmask(SIG_BLOCK, &set_, &old_mask_) != 0) throw_errno("sigprocmask");
  // T7 (our side): a signal ignored by whoever started us (nohup, a shell
  // with `trap '' TERM`) is discarded at generation and never reaches a
  // signalfd. Blocked now, so SIG_DFL is safe: it only ever becomes pending.
  for (int s : signals) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(s, &dfl, nullptr);
  }
  int fd = signalfd(-1, &set_, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
    throw_errno("signalfd", err);
  }
  fd_.reset(fd);
  g_instance_alive = true;
}

SignalFd::~SignalFd() {
  fd_.reset();
  // Drop anything still pending before unblocking, so that a late TERM does
  // not kill us on the way out with its default action.
  struct timespec zero {};
  while (sigtimedwait(&set_, nullptr, &zero) > 0) {
  }
  sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  g_instance_alive = false;
}

std::vector<int> SignalFd::drain() {
  std::vector<int> out;
  signalfd_siginfo info[16];
  for (;;) {
    ssize_t n = retry_on_eintr([&] { return ::read(fd_.get(), info, sizeof info); });
    if (n <= 0) break;  // EAGAIN: drained
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(signalfd_siginfo); ++i) {
      int s = static_cast<int>(info[i].ssi_signo);
      if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
    }
  }
  return out;
}

}  // namespace preforkd::sys
