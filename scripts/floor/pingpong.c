// Floor of one request in flight on loopback TCP: the client writes REQ bytes, the server
// (other process, other core) reads them and writes RESP bytes back; the client reads them.
// Both block in epoll_wait, as an event-loop server and client do. Prints round trips/s and p50.
// Usage: pingpong SECONDS REQ RESP
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static void pin(int cpu){cpu_set_t s;CPU_ZERO(&s);CPU_SET(cpu,&s);sched_setaffinity(0,sizeof s,&s);}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static void readn(int ep,int fd,char*b,int n){int got=0;struct epoll_event e;while(got<n){epoll_wait(ep,&e,1,-1);int r=read(fd,b+got,n-got);if(r<=0)_exit(0);got+=r;}}
int main(int argc,char**argv){
  double dur=atof(argv[1]);int Q=atoi(argv[2]),R=atoi(argv[3]);int one=1;
  int ls=socket(AF_INET,SOCK_STREAM,0);setsockopt(ls,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(ls,(void*)&a,sizeof a);socklen_t al=sizeof a;getsockname(ls,(void*)&a,&al);listen(ls,16);
  char*buf=calloc(1,65536);
  pid_t pid=fork();
  if(pid==0){pin(0);int fd=accept(ls,0,0);setsockopt(fd,IPPROTO_TCP,TCP_NODELAY,&one,4);
    int ep=epoll_create1(0);struct epoll_event e={.events=EPOLLIN};epoll_ctl(ep,EPOLL_CTL_ADD,fd,&e);
    for(;;){readn(ep,fd,buf,Q);if(write(fd,buf,R)!=R)_exit(0);}}
  pin(1);int fd=socket(AF_INET,SOCK_STREAM,0);connect(fd,(void*)&a,sizeof a);setsockopt(fd,IPPROTO_TCP,TCP_NODELAY,&one,4);
  int ep=epoll_create1(0);struct epoll_event e={.events=EPOLLIN};epoll_ctl(ep,EPOLL_CTL_ADD,fd,&e);
  double t_end=now()+0.5;while(now()<t_end){write(fd,buf,Q);readn(ep,fd,buf,R);}
  int cap=4000000;double*lat=malloc(cap*sizeof(double));long n=0;double t0=now();
  while(now()-t0<dur&&n<cap){double s=now();write(fd,buf,Q);readn(ep,fd,buf,R);lat[n++]=now()-s;}
  double el=now()-t0;qsort(lat,n,sizeof(double),cmp);
  printf("req=%d resp=%d round_trips/s=%.0f p50=%.1fus p99=%.1fus\n",Q,R,n/el,lat[n/2]*1e6,lat[n*99/100]*1e6);
  kill(pid,9);waitpid(pid,0,0);return 0;}
