"""A VM running: the supervisor loop that launches the hypervisor and brings guest reboots back
(supervisor), the entry of the detached supervisor `start -b` spawns (detached), the checks and
plan of one launch (launch), the VNC port (ports), stopping and powering off (power)."""
