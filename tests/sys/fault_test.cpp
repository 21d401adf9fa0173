// sys/fault (the tests-only PREFORKD_FAULTS seam) and the non-throwing
// sys/io twins, with failures injected at their fault points.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "support/support.hpp"
#include "sys/error.hpp"
#include "sys/event_loop_fds.hpp"
#include "sys/fault.hpp"
#include "sys/io.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"
#include "sys/spawn.hpp"

using namespace preforkd;
using namespace preforkd::test;

namespace {

// The seam is process-wide: every test that sets rules removes them again.
struct Faults {
  explicit Faults(const std::string& spec) { sys::fault::set_spec_for_testing(spec); }
  ~Faults() { sys::fault::set_spec_for_testing(""); }
  Faults(const Faults&) = delete;
  Faults& operator=(const Faults&) = delete;
};

bool cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }
bool nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

}  // namespace

TEST_CASE("fault: well-formed PREFORKD_FAULTS specs") {
  for (const char* ok : {"", "epoll_ctl:ENOMEM:5:3", "fork:EAGAIN:1", "write:5:2:0", "accept4:EMFILE:1:1",
                         "open:EACCES:1, pipe2:EMFILE:2", "socket:ENFILE:3,", "write:EINTR:1,write:EIO:4",
                         "pipe2:ENOSPC:1", "open:EIO:1"}) {
    CHECK_MESSAGE(sys::fault::check_spec(ok).empty(), ok);
  }
}

TEST_CASE("fault: malformed specs say why") {
  CHECK(sys::fault::check_spec("nope:EIO:1").find("unknown point `nope`") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EWHAT:1").find("unknown errno `EWHAT`") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO:0").find("nth") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO:x").find("nth") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO:1:-1").find("count") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO").find("point:ERRNO:nth[:count]") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO:1:2:3").find("point:ERRNO:nth[:count]") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:0:1").find("unknown errno") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:4096:1").find("unknown errno") != std::string::npos);
  CHECK(sys::fault::check_spec("fork:EIO:1,bad").find("bad entry `bad`") != std::string::npos);
}

TEST_CASE("fault: the nth call and count-1 after it fail, the others pass") {
  Faults f("epoll_ctl:ENOMEM:5:3");
  int got[10];
  for (int& g : got) g = sys::fault::injected("epoll_ctl");
  for (int i = 0; i < 10; ++i) CHECK_MESSAGE(got[i] == (i >= 4 && i <= 6 ? ENOMEM : 0), "call ", i + 1);
  CHECK(sys::fault::injected("fork") == 0);       // counted apart
  CHECK(sys::fault::injected("no_such") == 0);    // never failed
}

TEST_CASE("fault: count defaults to 1, count 0 fails every call from the nth on") {
  {
    Faults f("write:EIO:2");
    CHECK(sys::fault::injected("write") == 0);
    CHECK(sys::fault::injected("write") == EIO);
    CHECK(sys::fault::injected("write") == 0);
  }
  {
    Faults f("write:28:3:0");  // 28 = ENOSPC, by number
    CHECK(sys::fault::injected("write") == 0);
    CHECK(sys::fault::injected("write") == 0);
    for (int i = 0; i < 100; ++i) CHECK(sys::fault::injected("write") == ENOSPC);
  }
}

TEST_CASE("fault: several rules, one point each or the same point") {
  Faults f("open:EACCES:1,fork:EAGAIN:2,open:EMFILE:3");
  CHECK(sys::fault::injected("open") == EACCES);
  CHECK(sys::fault::injected("fork") == 0);
  CHECK(sys::fault::injected("fork") == EAGAIN);
  CHECK(sys::fault::injected("open") == 0);
  CHECK(sys::fault::injected("open") == EMFILE);
  CHECK(sys::fault::injected("open") == 0);
}

TEST_CASE("fault: a new spec restarts the counts, and a malformed one leaves no rule at all") {
  {
    Faults f("pipe2:EMFILE:2");
    CHECK(sys::fault::injected("pipe2") == 0);
  }
  {
    Faults f("pipe2:EMFILE:2");  // counting from 1 again
    CHECK(sys::fault::injected("pipe2") == 0);
    CHECK(sys::fault::injected("pipe2") == EMFILE);
  }
  Faults f("pipe2:EMFILE:1,pipe2:EBOGUS:1");
  for (int i = 0; i < 5; ++i) CHECK(sys::fault::injected("pipe2") == 0);
}

TEST_CASE("fault: errno names") {
  CHECK(std::string(sys::fault::errno_name(EAGAIN)) == "EAGAIN");
  CHECK(std::string(sys::fault::errno_name(EMFILE)) == "EMFILE");
  CHECK(sys::fault::errno_name(4000) == nullptr);
}

TEST_CASE("io: make_pipe gives CLOEXEC ends, non-blocking as asked, and fails at pipe2 when told to") {
  sys::PipeEnds p;
  REQUIRE(sys::make_pipe(p, true, false) == 0);
  CHECK(cloexec(p.read.get()));
  CHECK(cloexec(p.write.get()));
  CHECK(nonblocking(p.read.get()));
  CHECK(!nonblocking(p.write.get()));
  char c = 0;
  CHECK(sys::read_some(p.read.get(), &c, 1) == -1);
  CHECK(errno == EAGAIN);
  CHECK(sys::write_some(p.write.get(), "x", 1) == 1);
  CHECK(sys::read_some(p.read.get(), &c, 1) == 1);
  CHECK(c == 'x');

  Faults f("pipe2:EMFILE:1");
  int before = sys::count_open_fds();
  sys::PipeEnds failed;
  CHECK(sys::make_pipe(failed, true, true) == EMFILE);
  CHECK(!failed.read);
  CHECK(!failed.write);
  CHECK(sys::count_open_fds() == before);
  REQUIRE(sys::make_pipe(failed, true, true) == 0);  // only the first call
  CHECK(nonblocking(failed.read.get()));
  CHECK(nonblocking(failed.write.get()));
}

TEST_CASE("io: accept_client under an injected EMFILE leaves the client queued for the next call") {
  uint16_t port = 0;
  sys::UniqueFd listener(listen_loopback(port));
  REQUIRE(sys::set_nonblocking(listener.get()) == 0);
  sys::UniqueFd none;
  CHECK(sys::accept_client(listener.get(), none) == EAGAIN);

  int client = connect_tcp(port);
  REQUIRE(client >= 0);
  sys::UniqueFd client_fd(client);
  Faults f("accept4:EMFILE:1:1");
  sys::UniqueFd accepted;
  CHECK(sys::accept_client(listener.get(), accepted) == EMFILE);
  CHECK(!accepted);
  REQUIRE(sys::accept_client(listener.get(), accepted) == 0);  // the client was still queued
  CHECK(cloexec(accepted.get()));
  CHECK(nonblocking(accepted.get()));
  CHECK(sys::accept_client(listener.get(), none) == EAGAIN);

  CHECK(sys::send_some(accepted.get(), "hi", 2) == 2);
  char buf[2];
  CHECK(sys::read_some(client_fd.get(), buf, 2) == 2);
}

TEST_CASE("io: send_some and write_some fail at the write point, and send never raises SIGPIPE") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  sys::UniqueFd a(sv[0]), b(sv[1]);
  {
    Faults f("write:EIO:1,write:ENOSPC:2");
    CHECK(sys::send_some(a.get(), "x", 1) == -1);
    CHECK(errno == EIO);
    CHECK(sys::write_some(a.get(), "x", 1) == -1);
    CHECK(errno == ENOSPC);
    CHECK(sys::send_some(a.get(), "x", 1) == 1);
  }
  b.reset();
  CHECK(sys::send_some(a.get(), "x", 1) == -1);  // T13: EPIPE, and the test is still alive
  CHECK(errno == EPIPE);
}

TEST_CASE("io: open_file adds O_CLOEXEC and fails at the open point") {
  TempDir dir;
  std::string path = dir.write("f", "hello");
  sys::UniqueFd fd;
  REQUIRE(sys::open_file(fd, path, O_RDONLY) == 0);
  CHECK(cloexec(fd.get()));
  std::string text;
  CHECK(sys::read_whole(fd.get(), text, 100) == 0);
  CHECK(text == "hello");
  CHECK(sys::open_file(fd, dir.file("missing"), O_RDONLY) == ENOENT);
  Faults f("open:EACCES:1");
  sys::UniqueFd denied;
  CHECK(sys::open_file(denied, path, O_RDONLY) == EACCES);
  CHECK(!denied);
}

TEST_CASE("io: memfd, write_whole and read_whole from offset 0, EFBIG past the limit, pipes too") {
  sys::UniqueFd m;
  REQUIRE(sys::memfd("test", m) == 0);
  CHECK(cloexec(m.get()));
  std::string big(200000, 'z');
  REQUIRE(sys::write_whole(m.get(), big) == 0);
  std::string back;
  CHECK(sys::read_whole(m.get(), back, big.size()) == 0);
  CHECK(back == big);
  CHECK(sys::read_whole(m.get(), back, 1000) == EFBIG);  // read twice: offsets untouched
  CHECK(back.empty());

  sys::PipeEnds p;
  REQUIRE(sys::make_pipe(p, false, false) == 0);
  REQUIRE(sys::write_whole(p.write.get(), "through a pipe") == 0);
  p.write.reset();
  CHECK(sys::read_whole(p.read.get(), back, 100) == 0);  // ESPIPE: read as a stream
  CHECK(back == "through a pipe");

  Faults f("write:ENOSPC:1");
  CHECK(sys::write_whole(m.get(), "more") == ENOSPC);
}

TEST_CASE("io: write_file_atomic replaces the file whole, or leaves it and no .tmp behind") {
  TempDir dir;
  std::string path = dir.file("preforkd.pid");
  REQUIRE(sys::write_file_atomic(path, "123\n") == 0);
  CHECK(read_file(path) == "123\n");
  REQUIRE(sys::write_file_atomic(path, "45\n") == 0);
  CHECK(read_file(path) == "45\n");
  Faults f("write:EIO:1");
  CHECK(sys::write_file_atomic(path, "6\n") == EIO);
  CHECK(read_file(path) == "45\n");
  CHECK(!file_exists(path + ".tmp"));
}

TEST_CASE("io: fd flags, listening sockets, relisten") {
  uint16_t port = 0;
  sys::UniqueFd listener(listen_loopback(port));
  CHECK(sys::is_listening_socket(listener.get()));
  CHECK(sys::relisten(listener.get(), 16) == 0);
  CHECK(sys::is_listening_socket(listener.get()));
  sys::PipeEnds p;
  REQUIRE(sys::make_pipe(p, false, false) == 0);
  CHECK(!sys::is_listening_socket(p.read.get()));
  CHECK(sys::fd_is_open(p.read.get()));
  REQUIRE(sys::set_inheritable(p.read.get(), true) == 0);
  CHECK(!cloexec(p.read.get()));
  REQUIRE(sys::set_inheritable(p.read.get(), false) == 0);
  CHECK(cloexec(p.read.get()));
  int raw = p.read.get();
  p.read.reset();
  CHECK(!sys::fd_is_open(raw));
  CHECK(sys::set_nonblocking(raw) == EBADF);
}

TEST_CASE("io: peer credentials of a socketpair are our own") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  sys::UniqueFd a(sv[0]), b(sv[1]);
  sys::PeerCredentials cred;
  REQUIRE(sys::peer_credentials(a.get(), cred) == 0);
  CHECK(cred.pid == getpid());
  CHECK(cred.uid == geteuid());
  CHECK(cred.gid == getegid());
}

TEST_CASE("io: process ids, parent_of, make_directories, file_type") {
  CHECK(sys::self_pid() == getpid());
  CHECK(sys::effective_uid() == geteuid());
  CHECK(sys::effective_gid() == getegid());
  CHECK(sys::parent_of(getpid()) == getppid());
  CHECK(sys::parent_of(0) == 0);
  CHECK(sys::parent_of(999999999) == 0);

  TempDir dir;
  std::string deep = dir.file("a/b/c");
  REQUIRE(sys::make_directories(deep, 0755) == 0);
  sys::FileType t{};
  REQUIRE(sys::file_type(deep, t) == 0);
  CHECK(t == sys::FileType::Directory);
  CHECK(sys::make_directories(deep, 0755) == 0);  // already there
  std::string file = dir.write("f", "x");
  std::string failed;
  CHECK(sys::make_directories(file + "/sub", 0755, &failed) == ENOTDIR);
  CHECK(failed == file);
  REQUIRE(sys::file_type(file, t) == 0);
  CHECK(t == sys::FileType::Regular);
  CHECK(sys::file_type(dir.file("none"), t) == ENOENT);
  CHECK(sys::unlink_path(file) == 0);
  CHECK(sys::unlink_path(file) == ENOENT);
}

TEST_CASE("io: kill_process to a group falls back to the process, and never signals pid 0") {
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  REQUIRE(child > 0);
  // The child shares our process group: -child names no group (ESRCH), so the
  // process alone gets the signal.
  CHECK(sys::kill_process(child, SIGKILL, true) == 0);
  int st = 0;
  REQUIRE(waitpid(child, &st, 0) == child);
  CHECK(WIFSIGNALED(st));
  CHECK(sys::kill_process(0, SIGKILL, true) == ESRCH);
  CHECK(sys::kill_process(child, 0, false) == ESRCH);  // reaped
}

TEST_CASE("procfs: process_groups has the real, effective and supplementary gids") {
  auto groups = sys::process_groups(getpid());
  REQUIRE(groups);
  CHECK(std::find(groups->begin(), groups->end(), getgid()) != groups->end());
  CHECK(std::find(groups->begin(), groups->end(), getegid()) != groups->end());
  gid_t supplementary[256];
  int n = getgroups(256, supplementary);
  for (int i = 0; i < n; ++i)
    CHECK(std::find(groups->begin(), groups->end(), supplementary[i]) != groups->end());
  CHECK(groups->front() == getgid());
  CHECK(sys::process_groups_of_uid(getpid(), geteuid()) == groups);
  CHECK(!sys::process_groups_of_uid(getpid(), geteuid() + 1));
  CHECK(!sys::process_groups(0));  // never "self" (a peer from another pid namespace)
  CHECK(!sys::process_groups(-1));
  CHECK(!sys::process_groups(999999999));
}

TEST_CASE("fault: Epoll add/try_add/try_modify share the epoll_ctl point") {
  sys::Epoll ep;
  sys::PipeEnds p;
  REQUIRE(sys::make_pipe(p, true, true) == 0);
  Faults f("epoll_ctl:ENOMEM:1,epoll_ctl:ENOSPC:3");
  CHECK(ep.try_add(p.read.get(), EPOLLIN, 7) == ENOMEM);
  CHECK(ep.try_add(p.read.get(), EPOLLIN, 7) == 0);
  CHECK(ep.try_modify(p.read.get(), EPOLLIN | EPOLLOUT, 7) == ENOSPC);
  CHECK(ep.try_modify(p.read.get(), EPOLLIN, 7) == 0);
  CHECK(ep.try_add(p.read.get(), EPOLLIN, 7) == EEXIST);  // real errors come through too
  sys::fault::set_spec_for_testing("epoll_ctl:ENOMEM:1");
  try {
    ep.add(p.write.get(), EPOLLOUT, 8);
    FAIL("add did not throw");
  } catch (const sys::SysError& e) {
    CHECK(e.code().value() == ENOMEM);
  }
}

TEST_CASE("fault: spawn reports an injected fork failure as its stage, with no child left - and needs no pipe") {
  sys::SpawnRequest r;
  r.path = bin("preforkd-test-worker");
  r.argv = {"preforkd-test-worker", "--exit", "0"};
  r.fds = {{0, 0}, {1, 1}, {2, 2}};
  int before = sys::count_open_fds();
  size_t children = children_of(getpid()).size();
  {
    Faults f("fork:EAGAIN:1");
    auto res = sys::spawn(r);
    CHECK(res.pid == -1);
    REQUIRE(res.error);
    CHECK(res.error->stage == sys::SpawnError::Stage::Fork);
    CHECK(res.error->err == EAGAIN);
    CHECK(res.error->describe(r) == "fork: Resource temporarily unavailable");
    CHECK(children_of(getpid()).size() == children);  // nothing was forked
  }
  CHECK(sys::count_open_fds() == before);
  {
    // The child reports through shared memory, not an error pipe: a spawn
    // still works when preforkd could not make a pipe.
    Faults f("pipe2:EMFILE:1");
    auto ok = sys::spawn(r);  // and it works again
    REQUIRE_MESSAGE(ok.pid > 0, (ok.error ? ok.error->describe(r) : ""));
    int st = 0;
    waitpid(ok.pid, &st, 0);
    CHECK(WIFEXITED(st));
  }
  CHECK(sys::count_open_fds() == before);
}

TEST_CASE("fault: bind_listener fails at the socket point with the address in the message") {
  Faults f("socket:EMFILE:1");
  sys::ListenSpec spec;
  spec.host = "127.0.0.1";
  spec.port = 0;
  spec.text = "127.0.0.1:0";
  try {
    sys::bind_listener(spec);
    FAIL("no throw");
  } catch (const sys::SysError& e) {
    CHECK(e.code().value() == EMFILE);
    CHECK(std::string(e.what()).find("cannot create a socket for 127.0.0.1:0") != std::string::npos);
  }
  CHECK(sys::bind_listener(spec));  // the next socket() is real
}

TEST_CASE("error: throw_errno names the object and the error once") {
  try {
    sys::throw_errno("cannot open /x", ENOENT);
    FAIL("no throw");
  } catch (const sys::SysError& e) {
    CHECK(std::string(e.what()) == "cannot open /x: No such file or directory");
    CHECK(e.code().value() == ENOENT);
  }
}
