// Launch buttons (Colab) belong to the chapters, the notebooks a reader runs; the other pages
// (the introduction, the Results page, which is computed from stored records) are read only.
document.addEventListener("DOMContentLoaded", function () {
  if (window.location.pathname.indexOf("/chapters/") !== -1) return;
  document.querySelectorAll(".dropdown-launch-buttons").forEach(function (menu) {
    menu.remove();
  });
});
