# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pipe_global_optspecs
    string join \n i/container-ifname= l/host-ifname= a/family= mtu= rate= macvlan-mode= ipvlan= direct-phys host-shim n/dry-run v/verbose json no-netns-link timeout= wait= persist state-dir= h/help V/version
end

function __fish_pipe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pipe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pipe_using_subcommand
    set -l cmd (__fish_pipe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pipe -n "__fish_pipe_needs_command" -s i -l container-ifname -d 'Interface name inside the container' -r
complete -c pipe -n "__fish_pipe_needs_command" -s l -l host-ifname -d 'Host-side veth name (default: v{IFNAME}pl{PID}, or a hash when that is too long)' -r
complete -c pipe -n "__fish_pipe_needs_command" -s a -l family -d 'Address family, accepted for pipework compatibility (inferred from ADDR)' -r -f -a "4\t''
6\t''"
complete -c pipe -n "__fish_pipe_needs_command" -l mtu -d 'MTU of the new interface, 68 to 65535 (at least 1280 with an IPv6 address; default: the bridge\'s or parent\'s MTU)' -r
complete -c pipe -n "__fish_pipe_needs_command" -l rate -d 'Shape the container\'s egress on the new interface: a token bucket (TBF) set over netlink, no tc binary. tc\'s units: 10mbit, 512kbit, 1gbit (bps = bytes/s); BURST in bytes or 64kb (default: 10 ms at RATE, at least 16 KiB)' -r
complete -c pipe -n "__fish_pipe_needs_command" -l macvlan-mode -d 'Mode of a macvlan (default bridge)' -r -f -a "bridge\t''
private\t''
vepa\t''
passthru\t''"
complete -c pipe -n "__fish_pipe_needs_command" -l ipvlan -d 'Create an ipvlan child in this mode instead of a macvlan (l2: switched, l3/l3s: routed through the host); it shares the parent\'s MAC, so no MAC may be given' -r -f -a "l2\t''
l3\t''
l3s\t''"
complete -c pipe -n "__fish_pipe_needs_command" -l timeout -d 'Seconds to wait for a starting container to get a PID (default 5); with --wait, for the interface to be ready (default: for ever). 0 to 86400 (a day)' -r
complete -c pipe -n "__fish_pipe_needs_command" -l wait -d 'Inside a container: wait until interface -i (eth1) exists, is up and has carrier, as pipework --wait, with no address still in IPv6 duplicate address detection and unchanged for 0.25 s. =addr also needs an address (IPv4, or IPv6 other than link-local), =ipv4 or =ipv6 one of that family (comma-separated: all of them); use one with DHCP' -r -f -a "link\t'Nothing more (the default, as pipework): right for 0/0 and for DHCP run later'
addr\t'An address: IPv4, or IPv6 other than link-local, past duplicate address detection'
ipv4\t'An IPv4 address'
ipv6\t'An IPv6 address other than link-local, past duplicate address detection'"
complete -c pipe -n "__fish_pipe_needs_command" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_needs_command" -l direct-phys -d 'Move HOST_IF itself (or its VLAN sub-interface HOST_IF.VLAN) into the container, renamed to IFNAME; its old name is kept in the interface alias'
complete -c pipe -n "__fish_pipe_needs_command" -l host-shim -d 'With a macvlan (bridge mode) or an ipvlan (l3, l3s): let the host and the container reach each other through a shared host-side sibling on the parent (a macvlan, or an ipvlan of the container\'s mode; created once, tagged pipe:shared, removed with its last user) and a /32 (/128) route to each of the container\'s addresses'
complete -c pipe -n "__fish_pipe_needs_command" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_needs_command" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_needs_command" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_needs_command" -l no-netns-link -d 'Do not link the container\'s namespace into /var/run/netns'
complete -c pipe -n "__fish_pipe_needs_command" -l persist -d 'Keep this attachment: `pipe watch` applies it again whenever the container starts'
complete -c pipe -n "__fish_pipe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_needs_command" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_needs_command" -a "detach" -d 'Remove an interface pipe attached: both ends, a bridge pipe created once it has no port left, the /var/run/netns link; the replaced default route is put back'
complete -c pipe -n "__fish_pipe_needs_command" -a "apply" -d 'Attach everything in an attachments file (same format as pipe watch\'s) in one process: guests resolved concurrently, one host netlink connection, each attachment atomic on its own, a summary at the end'
complete -c pipe -n "__fish_pipe_needs_command" -a "gc" -d 'Remove what is left of attachments whose container is gone: state records, stale /var/run/netns links, bridges pipe created that nothing uses'
complete -c pipe -n "__fish_pipe_needs_command" -a "watch" -d 'Follow the Docker Engine\'s events and apply persistent attachments (--persist, and the attachments file) each time their container starts'
complete -c pipe -n "__fish_pipe_needs_command" -a "route" -d 'Add, delete or replace a route inside the container, over netlink'
complete -c pipe -n "__fish_pipe_needs_command" -a "rule" -d 'Add or delete a policy routing rule inside the container, over netlink'
complete -c pipe -n "__fish_pipe_needs_command" -a "link" -d 'Connect two containers with one veth pair: no bridge, no host-side interface'
complete -c pipe -n "__fish_pipe_needs_command" -a "selftest" -d 'Run the main job on throwaway namespaces: real attaches, pings, a re-run, detach'
complete -c pipe -n "__fish_pipe_needs_command" -a "list" -d 'List the attachments pipe has records of, each checked against the kernel'
complete -c pipe -n "__fish_pipe_needs_command" -a "doctor" -d 'Check this host (and a host interface, a container) before attaching; changes nothing'
complete -c pipe -n "__fish_pipe_needs_command" -a "tc" -d 'Run the host\'s `tc` with these arguments inside the container\'s namespace'
complete -c pipe -n "__fish_pipe_using_subcommand detach" -s i -l container-ifname -d 'Interface name inside the container' -r
complete -c pipe -n "__fish_pipe_using_subcommand detach" -l timeout -d 'Seconds to wait for a starting container to get a PID (0 to 86400)' -r
complete -c pipe -n "__fish_pipe_using_subcommand detach" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand detach" -l force -d 'Delete the interface even if pipe did not create it'
complete -c pipe -n "__fish_pipe_using_subcommand detach" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand detach" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand detach" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand detach" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand apply" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand apply" -l persist -d 'Record the attachments as persistent, for pipe watch'
complete -c pipe -n "__fish_pipe_using_subcommand apply" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand apply" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand apply" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand apply" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand gc" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand gc" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand gc" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand gc" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand gc" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand watch" -l file -d 'Declarative attachments (TOML, one [[attach]] table per interface); a missing file at the default path means none' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand watch" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand watch" -l once -d 'Apply to the running containers once, then exit (no event stream)'
complete -c pipe -n "__fish_pipe_using_subcommand watch" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand watch" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand watch" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand route" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand route" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand route" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand route" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand route" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand rule" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand rule" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand rule" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand rule" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand rule" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand link" -s i -l container-ifname -d 'Interface name in the first container (and in the second, unless --peer-ifname)' -r
complete -c pipe -n "__fish_pipe_using_subcommand link" -l peer-ifname -d 'Interface name in the second container' -r
complete -c pipe -n "__fish_pipe_using_subcommand link" -l mtu -d 'MTU of both ends, 68 to 65535 (at least 1280 with IPv6; default 1500)' -r
complete -c pipe -n "__fish_pipe_using_subcommand link" -l timeout -d 'Seconds to wait for a starting container to get a PID (0 to 86400)' -r
complete -c pipe -n "__fish_pipe_using_subcommand link" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand link" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand link" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand link" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand link" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -l keep -d 'Stop before the detach and leave the namespaces and attachments for inspection'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -l clean -d 'Remove what earlier `pipe selftest --keep` (or interrupted) runs left'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand selftest" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand list" -l state -d 'Only attachments in this state' -r -f -a "live\t''
drifted\t''
stale\t''
pending\t''"
complete -c pipe -n "__fish_pipe_using_subcommand list" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand list" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand list" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand list" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand doctor" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand doctor" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand doctor" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand doctor" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_using_subcommand tc" -l state-dir -d 'Where pipe keeps its records of what it created (an absolute path)' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand tc" -s n -l dry-run -d 'Print the plan as equivalent ip commands and change nothing (pipe\'s state directory included: its records are read, no directory, lock or record is created)'
complete -c pipe -n "__fish_pipe_using_subcommand tc" -s v -l verbose -d 'More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works'
complete -c pipe -n "__fish_pipe_using_subcommand tc" -l json -d 'Print the result as one JSON object'
complete -c pipe -n "__fish_pipe_using_subcommand tc" -s h -l help -d 'Print help'

# HOST_IF and GUEST: interface, netns and container names, from pipe itself.
function __fish_pipe_names
    set -l cur (commandline -ct)
    command pipe __complete line (commandline -opc) "$cur" 2>/dev/null
end
complete -c pipe -a '(__fish_pipe_names)'
