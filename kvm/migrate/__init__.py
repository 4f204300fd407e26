"""vmsend and vmrecv: a VM's datasets sent as ZFS streams to another host or root (send.py), and
received under the VM's lock with every check before anything is replaced (receive.py)."""
