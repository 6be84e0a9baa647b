// libpci (pciutils), for PCI discovery with names from pci.ids.
// Swift cannot call C variadic functions, so the two lookups we use are wrapped here.
#include <pci/pci.h>

static void vpci_quiet(char *msg, ...) { (void)msg; }

/// A pci_access on the sysfs back end rooted at `sysfs` (e.g. "/sys"), warnings silenced.
static inline struct pci_access *vpci_open(const char *sysfs_bus_pci) {
    struct pci_access *a = pci_alloc();
    if (!a) return 0;
    a->method = PCI_ACCESS_SYS_BUS_PCI;
    a->warning = vpci_quiet;
    pci_set_param(a, "sysfs.path", (char *)sysfs_bus_pci);
    pci_init(a);
    return a;
}

/// "vendor" name from pci.ids, or NULL when the database lacks it.
static inline const char *vpci_vendor_name(struct pci_access *a, char *buf, int size, unsigned vendor) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_VENDOR | PCI_LOOKUP_NO_NUMBERS, vendor);
}

/// "device" name from pci.ids, or NULL when the database lacks it.
static inline const char *vpci_device_name(struct pci_access *a, char *buf, int size, unsigned vendor, unsigned device) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS, vendor, device);
}
