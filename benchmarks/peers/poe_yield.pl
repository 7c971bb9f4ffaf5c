#!/usr/bin/perl
# POE's event loop rate, for the kernel micro-benchmark: SESSIONS sessions each
# yield to themselves until EVENTS events in all have been dispatched (a no-op
# handler apart from the yield), timed around POE::Kernel->run. With "delay" as
# the third argument they arm `delay(tick => 0)` instead of yielding: timers/s.
#
#   perl poe_yield.pl EVENTS SESSIONS [yield|delay]
#
# Prints one JSON line: {"events": N, "sessions": S, "kind": ..., "seconds": T}.
use strict;
use warnings;
use POE;
use Time::HiRes qw(time);

my ($events, $sessions, $kind) = @ARGV;
$events   ||= 100_000;
$sessions ||= 1;
$kind     ||= "yield";
my $per = int($events / $sessions);

for (1 .. $sessions) {
    POE::Session->create(
        inline_states => {
            _start => sub { $_[HEAP]{left} = $per; $_[KERNEL]->yield("tick") },
            tick   => sub {
                return if --$_[HEAP]{left} <= 0;
                if ($kind eq "delay") { $_[KERNEL]->delay(tick => 0) }
                else                  { $_[KERNEL]->yield("tick") }
            },
        },
    );
}
my $t0 = time;
POE::Kernel->run();
my $elapsed = time - $t0;
printf "{\"events\": %d, \"sessions\": %d, \"kind\": \"%s\", \"seconds\": %.6f}\n",
    $per * $sessions, $sessions, $kind, $elapsed;
exit 0;
