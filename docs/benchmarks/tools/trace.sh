cd /tmp/bench
export NOREC=1 EV=task-clock,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
F="fanout --subscribers 1000 --payload 64 --max --duration 10 --warmup 2"
for m in uring epoll; do echo "### tr-$m-f1000"; ./prof.sh tr-$m-f1000 ringhub-$m ringhub $F; done
for m in uring epoll; do echo "### tr-$m-echo"; ./prof.sh tr-$m-echo ringhub-$m ringhub echo --connections 100 --pipeline 16 --payload 64 --duration 10 --warmup 2; done
