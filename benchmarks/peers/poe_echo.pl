#!/usr/bin/perl
# Peer "poe": the Perl Cookbook's POE echo server (recipe 17.15), the original of
# examples/echo_server.py: POE::Component::Server::TCP with its default line
# filter; each line is echoed back to its client and logged to the console with
# print.
#
# The only additions for the benchmark: the port comes from the command line
# (0 picks a free one), and once bound the server prints "listening on HOST:PORT"
# so the harness knows where to connect (flushed; the log lines stay
# block-buffered, as in the recipe). SIGTERM stops it (POE's default).
#
# Note: POE::Filter::Line's default output terminator is "\r\n", so the echoes
# carry one extra byte per line; the load generator accepts "\n" or "\r\n".
use strict;
use warnings;
use POE qw(Component::Server::TCP);
use IO::Handle;
use Socket qw(unpack_sockaddr_in inet_ntoa);

my $port = @ARGV ? $ARGV[0] : 12345;

POE::Component::Server::TCP->new(
    Address     => "127.0.0.1",
    Port        => $port,
    Started     => sub {
        my ($bound, $addr) = unpack_sockaddr_in($_[HEAP]{listener}->getsockname);
        print "listening on ", inet_ntoa($addr), ":$bound\n";
        STDOUT->flush;    # stdout is a pipe: the harness waits for this line
    },
    ClientInput => sub {
        my ($session, $heap, $input) = @_[SESSION, HEAP, ARG0];
        $heap->{client}->put($input);                     # echo it back to the client
        print "client ", $session->ID, ": $input\n";     # and log it to the console
    },
);

POE::Kernel->run();
exit 0;
