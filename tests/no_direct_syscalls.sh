#!/bin/sh
# Layering (STYLE 3.2): only supervisor/sys talks to the kernel. Every file
# under daemon/, core/ and config/ goes through the sys wrappers, which retry
# EINTR, add CLOEXEC and carry the fault points (sys/fault.hpp); so none of
# them may
#   (a) include a kernel header (types-only <sys/types.h>, and <csignal> /
#       <signal.h> for the signal numbers, are fine), or
#   (b) call a syscall or libc kernel function directly: `read(` or
#       `::read(`. Not flagged: member calls (`in.read(`, `p->write(`),
#       names qualified by a namespace or class (`sys::read_some(`,
#       `std::fstream::open`), a declaration or definition of a function of
#       our own (`bool kill(` is preceded by its type), comments and strings.
# Prints file:line for each hit and fails. Usage: no_direct_syscalls.sh SUPERVISOR_DIR
set -eu
src=${1:?usage: no_direct_syscalls.sh SUPERVISOR_DIR}
cd "$src"
files=$(find daemon core config -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) | sort)
[ -n "$files" ] || { echo "no source files under $src/{daemon,core,config}"; exit 1; }

# shellcheck disable=SC2086
out=$(perl -e '
  my @headers = qw(unistd.h fcntl.h poll.h pwd.h grp.h dirent.h shadow.h ifaddrs.h netdb.h
                   sys/socket.h sys/epoll.h sys/prctl.h sys/mman.h sys/wait.h sys/signalfd.h
                   sys/timerfd.h sys/eventfd.h sys/inotify.h sys/stat.h sys/un.h sys/resource.h
                   sys/syscall.h sys/ioctl.h sys/uio.h sys/select.h sys/sendfile.h sys/file.h
                   sys/statfs.h sys/statvfs.h sys/ptrace.h sys/capability.h);
  my %header = map { $_ => 1 } @headers;
  my @calls = qw(open openat creat read write close close_range pread pwrite readv writev
                 send sendto sendmsg recv recvfrom recvmsg accept accept4 socket socketpair bind
                 listen connect shutdown getsockopt setsockopt getsockname getpeername
                 fcntl ioctl kill killpg raise fork vfork clone execve execv execvp execvpe
                 execl execlp fexecve system popen waitpid wait4 waitid pipe pipe2
                 epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait signalfd
                 timerfd_create timerfd_settime eventfd poll ppoll select pselect
                 sigprocmask pthread_sigmask sigaction
                 unlink unlinkat rename renameat mkdir rmdir chmod fchmod chown fchown lchown
                 stat fstat lstat fstatat access faccessat readlink symlink link truncate
                 ftruncate lseek fsync fdatasync opendir readdir closedir
                 prctl getpid getppid gettid geteuid getegid getuid getgid setuid setgid
                 seteuid setegid setgroups getgroups getgrouplist setsid setpgid getpgid
                 setrlimit getrlimit prlimit memfd_create mmap munmap dup dup2 dup3 chdir
                 fchdir umask getcwd getpwnam getpwnam_r getpwuid getpwuid_r getgrnam
                 getgrnam_r getgrgid getgrgid_r inet_pton inet_ntop getaddrinfo
                 sleep usleep nanosleep _exit);
  my $names = join("|", @calls);
  # Words before a name that still make it a call, not a declaration.
  my %call_keywords = map { $_ => 1 } qw(return else case throw do co_return co_yield co_await
                                          and or not new delete sizeof);
  my %seen;
  for my $file (@ARGV) {
    open(my $fh, "<", $file) or die "$file: $!";
    my $in_block = 0;
    while (my $line = <$fh>) {
      chomp $line;
      if (!$in_block && $line =~ /^\s*#\s*include\s*<([^>]+)>/) {
        my $h = $1;
        print "$file:$.: includes <$h>\n"
          if $header{$h} || $h =~ m{^(netinet|arpa|linux|asm)/};
        next;
      }
      my $code = $line;
      if ($in_block) {
        if ($code =~ s{^.*?\*/}{}) { $in_block = 0; } else { next; }
      }
      $code =~ s/R"([^(\s"]*)\(.*?\)\1"/R""/g;       # raw strings
      $code =~ s/"(?:[^"\\]|\\.)*"/""/g;             # strings
      $code =~ s/\x27(?:[^\x27\\]|\\.)\x27/\x27\x27/g;   # character literals
      $code =~ s{/\*.*?\*/}{ }g;                      # one-line block comments
      if ($code =~ s{/\*.*$}{}) { $in_block = 1; }    # a block comment goes on
      $code =~ s{//.*$}{};                            # line comments
      while ($code =~ /(?<![\w])($names)\s*\(/g) {
        my ($name, $at) = ($1, $-[0]);
        my $before = substr($code, 0, $at);
        $before =~ s/\s+$//;
        next if $before =~ /(\.|->)$/;                 # a member: in.read(, p->write(
        if ($before =~ /::$/) {                        # qualified: only the global :: counts
          next if $before =~ /[\w>]::$/;               # sys::read_some(, std::fstream::open(
        } elsif ($before =~ /(\w+)$/ && !$call_keywords{$1}) {
          next;                                        # `bool kill(`: a declaration of our own
        }
        next if $seen{"$file:$.:$name"}++;
        print "$file:$.: calls $name: ", ($line =~ s/^\s+//r), "\n";
      }
    }
    close $fh;
  }
' $files)
if [ -n "$out" ]; then
  echo "kernel calls outside supervisor/sys (use the sys/ wrappers, STYLE 3.2):"
  printf '%s\n' "$out"
  exit 1
fi
echo "no direct kernel call or kernel header in daemon/, core/ or config/"
