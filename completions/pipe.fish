complete -c pipe -s i -l container-ifname -d 'Interface name inside the container' -r
complete -c pipe -s l -l host-ifname -d 'Host-side veth name (default: v{IFNAME}pl{PID}, or a hash when that is too long)' -r
complete -c pipe -s a -l family -d 'Address family, accepted for pipework compatibility (inferred from ADDR)' -r -f -a "4\t''
6\t''"
complete -c pipe -l mtu -d 'MTU of the new interface (default: the bridge\'s or parent\'s MTU)' -r
complete -c pipe -l macvlan-mode -d 'Mode of a macvlan (default bridge)' -r -f -a "bridge\t''
private\t''
vepa\t''
passthru\t''"
complete -c pipe -l ipvlan -d 'Create an ipvlan child in this mode instead of a macvlan (l2: switched, l3/l3s: routed through the host); it shares the parent\'s MAC, so no MAC may be given' -r -f -a "l2\t''
l3\t''
l3s\t''"
complete -c pipe -l timeout -d 'Seconds to wait for a starting container to get a PID' -r
complete -c pipe -l generate -d 'Print the man page or a completion script to stdout' -r -f -a "man\t''
bash\t''
zsh\t''
fish\t''"
complete -c pipe -l direct-phys -d 'Move HOST_IF itself (or its VLAN sub-interface HOST_IF.VLAN) into the container, renamed to IFNAME; its old name is kept in the interface alias'
complete -c pipe -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing'
complete -c pipe -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -l json -d 'Print the result as one JSON object'
complete -c pipe -l no-netns-link -d 'Do not link the container\'s namespace into /var/run/netns'
complete -c pipe -s h -l help -d 'Print help'
complete -c pipe -s V -l version -d 'Print version'
