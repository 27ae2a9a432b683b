// Floor of a W=1 fan-out on loopback TCP: the writer writes one small message to each of N
// sockets per round, the reader (other process, other core) reads all of them via epoll and
// answers one byte on a control socket; the writer waits for it (one round in flight).
// Prints rounds/s, deliveries/s, writer CPU per delivery. Usage: fanfloor N SECONDS MSGBYTES
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static void pin(int cpu){cpu_set_t s;CPU_ZERO(&s);CPU_SET(cpu,&s);sched_setaffinity(0,sizeof s,&s);}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int N=atoi(argv[1]);double dur=atof(argv[2]);int M=atoi(argv[3]);
  int ls=socket(AF_INET,SOCK_STREAM,0);int one=1;setsockopt(ls,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);a.sin_port=0;
  bind(ls,(void*)&a,sizeof a);socklen_t al=sizeof a;getsockname(ls,(void*)&a,&al);listen(ls,4096);
  int ctl[2];socketpair(AF_UNIX,SOCK_STREAM,0,ctl);
  pid_t pid=fork();
  if(pid==0){ // reader
    pin(1);close(ctl[0]);
    int*fd=malloc(N*sizeof(int));int ep=epoll_create1(0);
    for(int i=0;i<N;i++){fd[i]=socket(AF_INET,SOCK_STREAM,0);if(connect(fd[i],(void*)&a,sizeof a)){perror("connect");exit(1);}
      setsockopt(fd[i],IPPROTO_TCP,TCP_NODELAY,&one,4);
      struct epoll_event e={.events=EPOLLIN,.data.u32=i};epoll_ctl(ep,EPOLL_CTL_ADD,fd[i],&e);}
    long got=0;char buf[65536];struct epoll_event ev[1024];long per=(long)N*M;
    for(;;){int n=epoll_wait(ep,ev,1024,-1);
      for(int k=0;k<n;k++){ssize_t r=read(fd[ev[k].data.u32],buf,sizeof buf);if(r<=0)_exit(0);got+=r;}
      while(got>=per){got-=per;if(write(ctl[1],"x",1)!=1)_exit(0);}}
  }
  pin(0);close(ctl[1]);
  int*fd=malloc(N*sizeof(int));
  for(int i=0;i<N;i++){fd[i]=accept(ls,0,0);setsockopt(fd[i],IPPROTO_TCP,TCP_NODELAY,&one,4);}
  char*msg=malloc(M);memset(msg,'a',M);char c;
  // warmup
  double t_end=now()+0.5;while(now()<t_end){for(int i=0;i<N;i++)write(fd[i],msg,M);read(ctl[0],&c,1);}
  struct rusage r0,r1;getrusage(RUSAGE_SELF,&r0);double t0=now();long rounds=0;
  while(now()-t0<dur){for(int i=0;i<N;i++)write(fd[i],msg,M);read(ctl[0],&c,1);rounds++;}
  double el=now()-t0;getrusage(RUSAGE_SELF,&r1);
  double cpu=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)*1e-6+(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)*1e-6;
  printf("N=%d M=%d rounds/s=%.0f deliveries/s=%.0f writer_cpu_per_delivery=%.2fus writer_busy=%.0f%%\n",N,M,rounds/el,rounds*(double)N/el,cpu*1e6/(rounds*(double)N),cpu/el*100);
  kill(pid,9);waitpid(pid,0,0);return 0;}
