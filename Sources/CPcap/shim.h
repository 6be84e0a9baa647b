// libpcap, for capture files tcpdump and Wireshark read. Only the dead-handle writer and the
// offline reader are used: frames come from the driver, not from a kernel interface.
#include <pcap/pcap.h>
