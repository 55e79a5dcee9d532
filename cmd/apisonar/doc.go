// Command apisonar is the agent binary. It parses the command line
// (contract.md), builds the configuration (defaults, YAML file, APISONAR_*
// environment, flags) and hands over to agent.Pipeline. User mistakes end
// with one line on stderr and exit code 2; runtime failures with exit
// code 1.
package main
